"""Shared export machinery for the edgeinfer model zoo.

Every architecture file (lenet5.py, yolov3.py, ...) exposes

    build(variant: str) -> Exportable      # variant is "tiny" or "full"

and export.py turns an Exportable into a model-repository version directory:

    <out>/<name>/<version>/saved_model.pb
    <out>/<name>/<version>/variables/...
    <out>/<name>/<version>/edgeinfer.toml
    <out>/<name>/<version>/golden/input_<key>.npy    fixed input
    <out>/<name>/<version>/golden/output_<key>.npy   Python TensorFlow's output for it
    <out>/<name>/<version>/golden/signatures.json    the signatures as TensorFlow's protobuf reads them

The directory is written under a temporary name and renamed into place, so a
half-written version never appears in the repository.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable

import numpy as np
import tensorflow as tf

SIGNATURE = "serving_default"


@dataclasses.dataclass
class Exportable:
    """One servable model: what to save and how edgeinfer should serve it."""

    name: str  # repository directory name, e.g. "lenet5"
    keras_model: Any  # the trainable network (parameter counts, layer inspection)
    serve: Callable  # a tf.function with a named input_signature returning a dict of tensors
    spec: dict  # edgeinfer.toml contents (see README.md)
    # Fixed golden inputs keyed like serve's input_signature; None means
    # uniform random values in [0, 1) of each input's shape with batch 2.
    golden_inputs: Callable[[np.random.Generator], dict] | None = None
    extra_files: dict = dataclasses.field(default_factory=dict)  # relative path -> np.ndarray (.npy)


def make_serve(fn: Callable, inputs: dict[str, tf.TensorSpec]) -> Callable:
    """Wraps fn(**inputs) -> dict into a tf.function with a named signature."""
    specs = [tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in inputs.items()]
    keys = list(inputs)

    @tf.function(input_signature=specs)
    def serve(*args):
        out = fn(**dict(zip(keys, args)))
        return {k: tf.identity(v, name=k) for k, v in out.items()}

    return serve


def default_golden_inputs(serve: Callable, rng: np.random.Generator, batch: int = 2) -> dict:
    out = {}
    for spec in serve.input_signature:
        shape = [batch if d is None and i == 0 else (d if d is not None else 8) for i, d in enumerate(spec.shape.as_list())]
        if spec.dtype.is_floating:
            out[spec.name] = rng.random(shape, dtype=np.float64).astype(spec.dtype.as_numpy_dtype)
        elif spec.dtype.is_integer:
            out[spec.name] = rng.integers(0, 255, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            raise ValueError(f"{spec.name}: no default golden input for dtype {spec.dtype}")
    return out


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(spec: dict) -> str:
    """Writes a two-level dict (scalars/arrays, then tables) as TOML."""
    lines = ["# How edgeinfer serves this model version. Written by tfmodels/zoo/export.py."]
    tables = {k: v for k, v in spec.items() if isinstance(v, dict)}
    for k, v in spec.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {toml_value(v)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def signatures_of(saved_model_dir: str) -> dict:
    """Every servable signature of the "serve" MetaGraphDef, as TensorFlow's own
    protobuf classes read it: the reference for the Go side's protowire reader.

    {key: {"method_name": str, "inputs"/"outputs": {key: {"name", "dtype" (DataType
    enum number), "shape" (list, -1 unknown; null for unknown rank)}}}}
    """
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    mg = next(g for g in sm.meta_graphs if "serve" in g.meta_info_def.tags)

    def info(t):
        shape = None if t.tensor_shape.unknown_rank else [d.size for d in t.tensor_shape.dim]
        return {"name": t.name, "dtype": int(t.dtype), "shape": shape}

    return {
        key: {
            "method_name": sig.method_name,
            "inputs": {k: info(v) for k, v in sig.inputs.items()},
            "outputs": {k: info(v) for k, v in sig.outputs.items()},
        }
        for key, sig in mg.signature_def.items()
        if key != "__saved_model_init_op"
    }


def export(m: Exportable, out_dir: str, version: int = 1, golden: bool = True, seed: int = 0) -> str:
    """Saves m as <out_dir>/<m.name>/<version>/ and returns that path."""
    final = os.path.join(out_dir, m.name, str(version))
    tmp = os.path.join(out_dir, m.name, f".{version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module = tf.Module()
    # Track the tf.Variables under Keras 3's variables, not the Keras model:
    # tracking the model saves every variable twice (the Keras wrapper and
    # its tf.Variable), and TF_LoadSessionFromSavedModel then restores one
    # copy while the signature reads the other ("Could not find variable").
    module.variables_ = [getattr(v, "value", v) for v in m.keras_model.variables]
    module.serve = m.serve
    tf.saved_model.save(module, tmp, signatures={SIGNATURE: m.serve})
    with open(os.path.join(tmp, "edgeinfer.toml"), "w") as f:
        f.write(to_toml(m.spec))
    if golden:
        rng = np.random.default_rng(seed)
        inputs = m.golden_inputs(rng) if m.golden_inputs else default_golden_inputs(m.serve, rng)
        # The reference is the saved model as Python TensorFlow loads and runs it.
        loaded = tf.saved_model.load(tmp)
        outputs = loaded.signatures[SIGNATURE](**{k: tf.constant(v) for k, v in inputs.items()})
        gdir = os.path.join(tmp, "golden")
        os.makedirs(gdir, exist_ok=True)
        for k, v in inputs.items():
            np.save(os.path.join(gdir, f"input_{k}.npy"), np.ascontiguousarray(v))
        for k, v in outputs.items():
            np.save(os.path.join(gdir, f"output_{k}.npy"), np.ascontiguousarray(v.numpy()))
        with open(os.path.join(gdir, "signatures.json"), "w") as f:
            json.dump(signatures_of(tmp), f, indent=1, sort_keys=True)
    for rel, arr in m.extra_files.items():
        p = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        np.save(p, arr)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final
