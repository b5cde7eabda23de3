"""Where the zoo's trained versions are cached, and how they get into a model repository.

The trainers (train_seg.py, and the embedding and video trainers) train once per
machine: a trained version directory is kept in

    ${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/<name>-<key>/

with key = cache_key(files): the first 16 hex digits of a sha256 over the base
name and content of every file that makes the version (the data generator, the
trainer, the topology) and the TensorFlow version, so a change to any of them
trains anew, and a fresh clone on the same machine finds the cache. install()
copies a cached version into <repository>/<name>/<version> under a temporary
name and renames it into place, so the daemon never sees half a version.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil


def cache_root() -> str:
    """The directory holding every cached trained version."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgeinfer", "trained")


def cache_key(files, tf_version: str) -> str:
    """16 hex digits of a sha256 over each file's base name and content, then tf_version."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(os.path.basename(f).encode() + b"\0" + fh.read() + b"\0")
    h.update(tf_version.encode())
    return h.hexdigest()[:16]


def zoo_files(*names: str) -> list[str]:
    """The paths of the named files of this package (tfmodels/zoo)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(here, n) for n in names]


def install(src: str, out: str, name: str, version: int) -> str:
    """Copies the version directory src to <out>/<name>/<version> (temporary name, then rename)."""
    final = os.path.join(out, name, str(version))
    tmp = os.path.join(out, name, f".{version}.tmp-{os.getpid()}")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def store(vdir: str, path: str, metrics: dict, metrics_file: str) -> str:
    """Writes metrics into vdir/golden/<metrics_file> and beside the cache entry (path + ".json"),
    then renames the exported version directory vdir to the cache entry path (replacing it)."""
    with open(os.path.join(vdir, "golden", metrics_file), "w") as f:
        json.dump(metrics, f, indent=1)
    shutil.rmtree(path, ignore_errors=True)
    with open(path + ".json", "w") as f:
        json.dump(metrics, f, indent=1)
    os.rename(vdir, path)
    return path


def adam(variables, steps: int, lr: float, warmup: int, clipnorm: float):
    """Adam built for variables: a linear warm-up from 0 over min(warmup, steps // 10) steps (at
    least 1), then cosine decay to 2% of lr; gradients clipped to a global norm of clipnorm."""
    import keras

    warmup = min(warmup, max(steps // 10, 1))
    sched = keras.optimizers.schedules.CosineDecay(0.0, max(steps - warmup, 1), alpha=0.02,
                                                   warmup_target=lr, warmup_steps=warmup)
    opt = keras.optimizers.Adam(sched, global_clipnorm=clipnorm)
    opt.build(variables)
    return opt
