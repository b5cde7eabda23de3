"""edgeinfer-import: bring a pretrained model into an edgeinfer repository.

    edgeinfer-import --repo models --name NAME [--version N] SOURCE [options]

SOURCE is a SavedModel folder, a Keras .keras/.h5 file, a frozen GraphDef .pb
or a TF.js graph model (model.json or its folder). The version is written
under a temporary name, checked, loaded through the Go binding (tfmodels
check), and only then renamed to <repo>/<name>/<version>: a failed import
leaves nothing behind. See tools/import/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from .errors import ImportFailed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SIGNATURE = "serving_default"
# The tolerance is ten times the difference between two runtimes of
# the original, and never below FLOOR.
FACTOR, FLOOR = 10.0, 1e-5


def parse_args(argv):
    p = argparse.ArgumentParser(prog="edgeinfer-import", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="SavedModel folder, .keras/.h5 file, frozen .pb, or TF.js model.json (or its folder)")
    p.add_argument("--repo", default="models", help="the model repository (default: models)")
    p.add_argument("--name", required=True, help="the model's name in the repository")
    p.add_argument("--version", type=int, help="version number (default: one above the highest there)")
    p.add_argument("--format", choices=["savedmodel", "keras", "graphdef", "tfjs"], help="default: from SOURCE")
    p.add_argument("--signature", default=SIGNATURE, help="SavedModel: the signature to import (default serving_default)")
    p.add_argument("--input", action="append", default=[], metavar="KEY=TENSOR",
                   help="graphdef/tfjs: the image input (default: the graph's placeholder)")
    p.add_argument("--output", action="append", default=[], metavar="KEY=TENSOR",
                   help="an output; any tensor of a graph (node or node:index), or a SavedModel signature output (repeatable)")
    p.add_argument("--checksums", metavar="FILE", help="sha256sum-format file: each listed file (relative to FILE) must match")
    p.add_argument("--task", default="classify", help="edgeinfer.toml task: classify, segment, embed, detect_rcnn, ..., or raw (no task plugin yet)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line")
    p.add_argument("--scale", type=float, default=1 / 255, help="model value = (pixel * scale - mean) / std (default 1/255)")
    p.add_argument("--mean", default="0", help="per channel, comma separated (one value: every channel)")
    p.add_argument("--std", default="1", help="per channel, comma separated (one value: every channel)")
    p.add_argument("--resize", default="stretch", choices=["stretch", "letterbox"])
    p.add_argument("--size", metavar="HxW", help="input size for a model that takes any size")
    p.add_argument("--softmax", choices=["auto", "true", "false"], default="auto",
                   help="classify: do the logits still need a softmax (auto: not when the graph ends in Softmax/Sigmoid)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other edgeinfer.toml field, e.g. output.label_offset=1 (VALUE in TOML)")
    p.add_argument("--samples", metavar="DIR", help="images to run through the original; stored as the validation samples")
    p.add_argument("--tolerance", type=float, help="largest difference from the original accepted (default: from two runtimes)")
    p.add_argument("--tfmodels", default=os.path.join(ROOT, "bin", "tfmodels"), help="the Go checker (make build writes it)")
    p.add_argument("--architecture", default="", help="free text for edgeinfer.toml")
    p.add_argument("--sign-key", metavar="FILE", help="sign the version with this private key (edgeinferd keygen) before it "
                   "is moved into place, for a daemon with [models] trusted_keys")
    p.add_argument("--edgeinferd", default=None, help="the edgeinferd that signs (default: bin/edgeinferd beside this "
                   "tool, else edgeinferd on PATH)")
    return p.parse_args(argv)


def verify_checksums(path: str) -> None:
    base = os.path.dirname(os.path.abspath(path))
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            want, _, name = line.strip().partition(" ")
            name = name.strip().lstrip("*")
            p = os.path.join(base, name)
            try:
                with open(p, "rb") as g:
                    got = hashlib.sha256(g.read()).hexdigest()
            except OSError as e:
                raise ImportFailed(f"{path}:{i}: {name}: {e.strerror}")
            if got != want.lower():
                raise ImportFailed(f"{p}: sha256 {got}, {path}:{i} pins {want}: the file is not the one pinned")


def read_source(a):
    from . import formats
    fmt = a.format or formats.detect(a.source)
    if fmt == "savedmodel":
        return formats.read_savedmodel(a.source, a.signature, a.output)
    if fmt == "keras":
        return formats.read_keras(a.source, a.output)
    if fmt == "graphdef":
        return formats.read_graphdef(a.source, a.input, a.output)
    return formats.read_tfjs(a.source, a.input, a.output)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        final = run(a)
    except ImportFailed as e:
        print(f"edgeinfer-import: {e}", file=sys.stderr)
        return 1
    print(final)
    return 0


def run(a) -> str:
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")  # the TF1 graph API's deprecation notices
    from . import repository, samples
    if a.checksums:
        verify_checksums(a.checksums)
    version = repository.next_version(a.repo, a.name, a.version)
    signer = repository.signer(a.edgeinferd, a.sign_key) if a.sign_key else None
    src = read_source(a)
    repository.check_flags(a)
    spec = samples.InputSpec.of(src, a)
    feeds = samples.feeds(src, spec, a.samples)
    ref = src.run(feeds)
    tol, spread = a.tolerance, None
    if src.second is not None:
        other = src.second[1](feeds)
        spread = max(float(np.max(np.abs(ref[k].astype(np.float64) - other[k]))) for k in ref)
    if tol is None:
        tol = max(FLOOR, FACTOR * (spread or 0.0))
    with repository.Staging(a.repo, a.name, version) as tmp:
        repository.save(src, tmp, SIGNATURE)
        got = repository.run_saved(tmp, SIGNATURE, feeds)
        diffs = {k: float(np.max(np.abs(got[k].astype(np.float64) - ref[k]))) if got[k].shape == ref[k].shape else float("inf") for k in ref}
        worst = max(diffs, key=diffs.get)
        if diffs[worst] > tol:
            raise ImportFailed(f"{src.path}: output {worst!r} of the imported model differs from {src.runtime} by "
                               f"{diffs[worst]:.3g} > tolerance {tol:.3g}")
        man = repository.manifest(src, spec, a, tol)
        repository.write(tmp, man, feeds, ref, {
            "source": os.path.abspath(src.path), "format": src.format, "runtime": src.runtime,
            "second_runtime": src.second[0] if src.second else None, "runtimes_differ_by": spread,
            "imported_differs_by": diffs, "tolerance": tol,
            "samples": samples.names(a.samples) if a.samples else "random",
        })
        repository.go_check(a.tfmodels, tmp)
        if signer:
            repository.sign(signer, a.sign_key, tmp)
        return tmp.commit()


if __name__ == "__main__":
    sys.exit(main())
