"""Writing an imported version into the repository: a staging folder beside
the versions (a dot name the daemon ignores), the SavedModel, edgeinfer.toml,
the validation samples, the Go check, and the rename that publishes it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import numpy as np

from .errors import ImportFailed

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from tfmodels.zoo.common import signatures_of, to_toml  # noqa: E402

ROOT = sys.path[0]


def next_version(repo: str, name: str, version: int | None) -> int:
    if not name or name.startswith(".") or "/" in name:
        raise ImportFailed(f"--name {name!r}: want a folder name (no '/', not starting with '.')")
    d = os.path.join(repo, name)
    have = [int(v) for v in os.listdir(d) if v.isdigit()] if os.path.isdir(d) else []
    if version is None:
        return max(have, default=0) + 1
    if version <= 0:
        raise ImportFailed(f"--version {version}: versions are positive integers")
    if version in have:
        raise ImportFailed(f"{os.path.join(d, str(version))} exists; give another --version (versions are not overwritten)")
    return version


class Staging:
    """A context manager: the version is built in <repo>/<name>/.<version>.import;
    commit() renames it into place. Leaving the block without commit (an
    error) removes it, and <repo>/<name> too when the import made it."""

    def __init__(self, repo: str, name: str, version: int):
        self.model = os.path.join(repo, name)
        self.final = os.path.join(self.model, str(version))
        self.tmp = os.path.join(self.model, f".{version}.import")
        self.made_model = False
        self.done = False

    def __enter__(self) -> "Staging":
        self.made_model = not os.path.isdir(self.model)
        os.makedirs(self.model, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self

    def __fspath__(self) -> str:
        return self.tmp

    def commit(self) -> str:
        os.rename(self.tmp, self.final)
        self.done = True
        return self.final

    def __exit__(self, *exc) -> None:
        if not self.done:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.made_model and not os.listdir(self.model):
                os.rmdir(self.model)


def save(src, tmp: Staging, signature: str) -> None:
    from . import graph
    graph.save_graph(src.gd, {k: t.name for k, t in src.inputs.items()},
                     {k: t.name for k, t in src.outputs.items()}, os.fspath(tmp), signature)


def run_saved(tmp: Staging, signature: str, feeds: dict) -> dict:
    """The written SavedModel as Python TensorFlow runs it."""
    import tensorflow as tf
    from .formats import Tensor, _by_batch
    fn = tf.saved_model.load(os.fspath(tmp)).signatures[signature]
    specs = fn.structured_input_signature[1]
    ins = {k: Tensor(s.name, [-1 if d is None else d for d in s.shape.as_list()], s.dtype) for k, s in specs.items()}

    def run(f):
        return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in f.items()}).items()}
    return _by_batch(run, ins)(feeds)


def _set(man: dict, assignment: str) -> None:
    key, eq, value = assignment.partition("=")
    if not eq or not key:
        raise ImportFailed(f"--set {assignment!r}: want KEY=VALUE, e.g. output.label_offset=1")
    try:
        v = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        v = value
    *tables, leaf = key.split(".")
    d = man
    for t in tables:
        d = d.setdefault(t, {})
    d[leaf] = v


LABELLED = ("classify", "detect_yolo", "detect_rcnn", "detect_rows", "detect_anchorfree", "segment", "video")


def check_flags(a) -> None:
    """What can be refused once the source is read, before it is run."""
    if a.task in LABELLED and not a.labels and "labels" not in {s.split("=", 1)[0] for s in a.set}:
        raise ImportFailed(f"--task {a.task} needs the class names: --labels FILE (one per line)")


def final_op(gd, tensor: str) -> str:
    """The op that makes tensor, looking through Identity nodes."""
    nodes = {n.name: n for n in gd.node}
    n = nodes.get(tensor.split(":")[0])
    while n is not None and n.op == "Identity" and n.input:
        n = nodes.get(n.input[0].split(":")[0].lstrip("^"))
    return n.op if n is not None else ""


def source_file(path: str) -> str:
    """The imported file as the manifest names it: model.json with its folder."""
    path = path.rstrip("/")
    base = os.path.basename(path)
    return os.path.join(os.path.basename(os.path.dirname(path)), base) if base == "model.json" else base


def manifest(src, spec, a, tol: float) -> dict:
    task = a.task
    out = {}
    single = next(iter(src.outputs)) if len(src.outputs) == 1 else None
    set_keys = {s.split("=", 1)[0] for s in a.set}
    if task in ("classify", "segment", "video") and "output.logits" not in set_keys:
        if single is None:
            raise ImportFailed(f"{src.path}: {len(src.outputs)} outputs ({', '.join(src.outputs)}); "
                               f"say which are the logits: --set output.logits='\"KEY\"'")
        out["logits"] = single
        if a.softmax == "auto":
            out["softmax"] = final_op(src.gd, src.outputs[single].name) not in ("Softmax", "Sigmoid")
        else:
            out["softmax"] = a.softmax == "true"
    if task == "detect_rows" and "output.detections" not in set_keys:
        if single is None:
            raise ImportFailed(f"{src.path}: {len(src.outputs)} outputs ({', '.join(src.outputs)}); "
                               f"say which holds the detection rows: --output KEY=TENSOR once")
        out["detections"] = single
    if task == "embed" and "output.embedding" not in set_keys:
        if single is None:
            raise ImportFailed(f"{src.path}: {len(src.outputs)} outputs ({', '.join(src.outputs)}); "
                               f"say which is the embedding: --output KEY=TENSOR once")
        out["embedding"] = single
        out["dim"] = int(src.outputs[single].shape[-1])
    man = {"task": task, "architecture": a.architecture or f"imported {src.format}: {source_file(src.path)}",
           "signature": "serving_default"}
    if a.labels:
        try:
            with open(a.labels) as f:
                man["labels"] = [l.strip() for l in f if l.strip()]
        except OSError as e:
            raise ImportFailed(f"--labels {a.labels}: {e.strerror}")
    man["input"] = {"key": spec.key, "height": spec.height, "width": spec.width, "channels": spec.channels,
                    "layout": "NHWC", "dtype": "float32", "resize": a.resize, "scale": spec.scale,
                    "mean": spec.mean, "std": spec.std}
    if spec.batch:
        man["input"]["batch"] = spec.batch
    man["output"] = out
    man["validation"] = {"tolerance": tol}
    man["source"] = {"format": src.format, "file": source_file(src.path), "runtime": src.runtime}
    for s in a.set:
        _set(man, s)
    return man


def write(tmp: Staging, man: dict, feeds: dict, ref: dict, record: dict) -> None:
    d = os.fspath(tmp)
    toml = to_toml({k: v for k, v in man.items() if v != {}})
    with open(os.path.join(d, "edgeinfer.toml"), "w") as f:
        f.write(toml.replace("Written by tfmodels/zoo/export.py", "Written by edgeinfer-import"))
    g = os.path.join(d, "golden")
    os.makedirs(g, exist_ok=True)
    for k, v in feeds.items():
        np.save(os.path.join(g, f"input_{k}.npy"), np.ascontiguousarray(v))
    for k, v in ref.items():
        np.save(os.path.join(g, f"output_{k}.npy"), np.ascontiguousarray(v.astype(np.float32) if v.dtype == np.float64 else v))
    with open(os.path.join(g, "signatures.json"), "w") as f:
        json.dump(signatures_of(d), f, indent=1, sort_keys=True)
    with open(os.path.join(d, "import.json"), "w") as f:
        json.dump(record, f, indent=1)


def signer(edgeinferd: str | None, key: str) -> str:
    """The edgeinferd that signs with key: edgeinferd if given, else bin/edgeinferd
    beside this tool, else edgeinferd on PATH. Checked before the import starts."""
    if not os.access(key, os.R_OK):
        raise ImportFailed(f"--sign-key {key}: cannot be read (edgeinferd keygen makes one)")
    exe = edgeinferd or os.path.join(ROOT, "bin", "edgeinferd")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("edgeinferd") if edgeinferd is None else None
    if not exe:
        raise ImportFailed(f"--sign-key: no edgeinferd to sign with at {edgeinferd or os.path.join(ROOT, 'bin', 'edgeinferd')} "
                           "nor on PATH (make build writes bin/edgeinferd; or give --edgeinferd)")
    return exe


def sign(edgeinferd: str, key: str, tmp: Staging) -> None:
    """Signs the staged version (edgeinferd sign writes its edgeinfer.sig), last, so
    that the signature covers every file the import wrote."""
    cmd = [edgeinferd, "sign", "-key", key, os.fspath(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ImportFailed(f"{' '.join(cmd)}: {(r.stdout + r.stderr).strip()}")


def go_check(tfmodels: str, tmp: Staging) -> None:
    """Loads the version through the Go binding (the C API) and reproduces its samples."""
    d = os.fspath(tmp)
    cmd = [tfmodels, "check", d] if os.access(tfmodels, os.X_OK) else ["go", "run", "./tfmodels/cmd/tfmodels", "check", os.path.abspath(d)]
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(ROOT, "build", "pkgconfig"), CGO_ENABLED="1",
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    except OSError as e:
        raise ImportFailed(f"{cmd[0]}: {e.strerror} (make build writes bin/tfmodels)")
    if r.returncode != 0:
        raise ImportFailed(f"the C API cannot serve the import ({' '.join(cmd[:2])}): {(r.stdout + r.stderr).strip()[-2000:]}")
