"""The formats edgeinfer-import reads. Each becomes a Source: a frozen
GraphDef with named input and output tensors (what the repository gets), and
the source's own runtime (what the import is checked against)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from . import graph, tfjs
from .errors import ImportFailed

HERE = os.path.dirname(os.path.abspath(__file__))
TFJSREF = os.path.join(os.path.dirname(HERE), "tfjsref")


@dataclasses.dataclass
class Tensor:
    name: str  # tensor name in gd, "node:0"
    shape: list  # -1 for unknown dims; None for unknown rank
    dtype: tf.DType


@dataclasses.dataclass
class Source:
    format: str  # savedmodel | keras | graphdef | tfjs
    path: str
    gd: graph_pb2.GraphDef
    inputs: dict[str, Tensor]  # signature key -> tensor
    outputs: dict[str, Tensor]
    runtime: str  # the source's own runtime, for the record
    run: Callable[[dict], dict]  # source runtime: {key: array} -> {key: array}
    # A second runtime of the original (another TF.js backend): how far two
    # correct runtimes of this model differ sets the tolerance. None: only one.
    second: tuple[str, Callable[[dict], dict]] | None = None


def sanitize(name: str) -> str:
    """A signature key from a tensor name: its last path part, [A-Za-z0-9_]."""
    base = name.split(":")[0].rsplit("/", 1)[-1]
    key = re.sub(r"[^A-Za-z0-9_]", "_", base) or "t"
    return key if not key[0].isdigit() else "t" + key


def pairs(specs: list[str], flag: str) -> dict[str, str]:
    """["key=tensor", "tensor"] -> {key: tensor}; a bare tensor gets its sanitized name."""
    out = {}
    for s in specs:
        key, eq, t = s.partition("=")
        if not eq:
            key, t = sanitize(s), s
        if not key or not t:
            raise ImportFailed(f"{flag} {s!r}: want KEY=TENSOR or TENSOR")
        if key in out:
            raise ImportFailed(f"{flag}: signature key {key!r} given twice")
        out[key] = t
    return out


def _shape(s: tf.TensorShape) -> list | None:
    return None if s.rank is None else [-1 if d is None else d for d in s.as_list()]


def _graph_tensors(gd: graph_pb2.GraphDef, names: dict[str, str], what: str, source: str) -> dict[str, Tensor]:
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(gd, name="")
        out = {}
        for k, n in names.items():
            try:
                t = g.get_tensor_by_name(graph.tensor_name(n))
            except (KeyError, ValueError):
                op = g.get_operation_by_name(graph.node_name(n))
                raise ImportFailed(f"{source}: {what} {k}={n}: node {op.name!r} has {len(op.outputs)} output(s)")
            out[k] = Tensor(graph.tensor_name(n), _shape(t.shape), t.dtype)
    return out


def fixed_batch(inputs: dict[str, Tensor]) -> bool:
    """Whether the inputs take exactly one sample at a time."""
    return any(t.shape and t.shape[0] == 1 for t in inputs.values())


def _by_batch(run: Callable[[dict], dict], inputs: dict[str, Tensor]) -> Callable[[dict], dict]:
    """Runs a model whose inputs have a fixed batch of 1 one sample at a time."""
    if not fixed_batch(inputs):
        return run

    def each(feeds: dict) -> dict:
        n = len(next(iter(feeds.values())))
        outs = [run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return each


def from_graph(gd: graph_pb2.GraphDef, path: str, inputs: list[str], outputs: list[str], fmt: str = "graphdef") -> Source:
    graph.check_ops(gd, path)
    ins = pairs(inputs, "--input") if inputs else {sanitize(p): p for p in graph.placeholders(gd)}
    outs = pairs(outputs, "--output") if outputs else {sanitize(s): s for s in graph.sinks(gd)}
    if not ins:
        raise ImportFailed(f"{path}: the graph has no Placeholder; name the input with --input KEY=TENSOR")
    if not outs:
        raise ImportFailed(f"{path}: name the outputs with --output KEY=TENSOR")
    graph.check_tensors(gd, ins, "input", path)
    graph.check_tensors(gd, outs, "output", path)
    tin, tout = _graph_tensors(gd, ins, "input", path), _graph_tensors(gd, outs, "output", path)

    def run(feeds):
        return graph.run_graph(gd, {ins[k]: v for k, v in feeds.items()}, outs, rows=fixed_batch(tin))
    return Source(fmt, path, gd, tin, tout, f"TensorFlow {tf.__version__} (TF1 graph session)", run)


def read_graphdef(path: str, inputs: list[str], outputs: list[str]) -> Source:
    gd = graph_pb2.GraphDef()
    try:
        with open(path, "rb") as f:
            gd.ParseFromString(f.read())
    except OSError as e:
        raise ImportFailed(f"{path}: {e.strerror}")
    except Exception as e:  # protobuf's DecodeError
        raise ImportFailed(f"{path}: not a binary GraphDef: {e}")
    if not gd.node:
        raise ImportFailed(f"{path}: not a binary GraphDef (no nodes)")
    return from_graph(gd, path, inputs, outputs)


def _freeze(fn, path: str, fmt: str, outputs: list[str], runtime: str, run) -> Source:
    """A concrete function -> Source, its variables made constants."""
    frozen = convert_variables_to_constants_v2(fn)
    gd = frozen.graph.as_graph_def()
    specs = fn.structured_input_signature[1] or {}
    if not specs:
        specs = {s.name: s for s in tf.nest.flatten(fn.structured_input_signature[0])}
    keys = list(specs)
    ins = {k: t.name for k, t in zip(keys, frozen.inputs)}
    # frozen.outputs follow tf.nest.flatten of the function's outputs, which
    # orders a dict by key.
    struct = fn.structured_outputs
    keys = sorted(struct) if isinstance(struct, dict) else [f"output_{i}" for i in range(len(frozen.outputs))]
    chosen = {k: t.name for k, t in zip(keys, frozen.outputs)}
    picks = pairs(outputs, "--output") if outputs else {k: k for k in chosen}
    missing = [t for t in picks.values() if t not in chosen]
    if missing:
        raise ImportFailed(f"{path}: --output {', '.join(missing)}: the signature's outputs are {', '.join(chosen)}")
    src = from_graph(gd, path, [f"{k}={t}" for k, t in ins.items()], [f"{k}={chosen[t]}" for k, t in picks.items()], fmt)
    src.runtime = runtime
    src.run = lambda feeds: (lambda out: {k: out[t] for k, t in picks.items()})(run(feeds))
    return src


def read_savedmodel(path: str, signature: str, outputs: list[str]) -> Source:
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        raise ImportFailed(f"{path}: TensorFlow cannot load this SavedModel: {str(e).splitlines()[0]}")
    sigs = dict(loaded.signatures)
    if signature not in sigs:
        raise ImportFailed(f"{path}: no signature {signature!r}; it has {', '.join(sigs) or 'none'} (--signature)")
    fn = sigs[signature]

    def run(feeds):
        return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
    return _freeze(fn, path, "savedmodel", outputs, f"TensorFlow {tf.__version__} (the SavedModel's signature)", run)


def read_keras(path: str, outputs: list[str]) -> Source:
    import keras
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise ImportFailed(f"{path}: Keras {keras.__version__} cannot load it: {str(e).splitlines()[0]}")
    if len(model.inputs) != 1:
        raise ImportFailed(f"{path}: the model has {len(model.inputs)} inputs; edgeinfer serves one image input")
    x = model.inputs[0]
    key = sanitize(x.name)
    spec = tf.TensorSpec(x.shape, x.dtype, name=key)
    names = [sanitize(n) for n in (getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])]
    if len(set(names)) != len(names):
        names = [f"output_{i}" for i in range(len(names))]

    @tf.function(input_signature=[spec])
    def serve(t):
        out = model(t, training=False)
        return dict(zip(names, tf.nest.flatten(out)))

    def run(feeds):
        out = model.predict_on_batch(feeds[key])
        return dict(zip(names, [np.asarray(o) for o in tf.nest.flatten(out)]))
    return _freeze(serve.get_concrete_function(), path, "keras", outputs, f"Keras {keras.__version__}", run)


def _node_run(model_json: str, backend: str, ins: dict[str, str], outs: dict[str, str], feeds: dict) -> dict:
    """Runs the TF.js original in Node (tools/import/tfjsref)."""
    script = os.path.join(TFJSREF, "run.mjs")
    if not os.path.isdir(os.path.join(TFJSREF, "node_modules")):
        raise ImportFailed(f"{TFJSREF}/node_modules is missing: run `npm ci` there (make import-deps does)")
    with tempfile.TemporaryDirectory() as d:
        cmd = ["node", script, "--model", model_json, "--backend", backend, "--out", d]
        for k, v in feeds.items():
            p = os.path.join(d, f"input_{k}.npy")
            np.save(p, np.ascontiguousarray(v))
            cmd += ["--input", f"{graph.node_name(ins[k])}={p}"]
        for k, t in outs.items():
            cmd += ["--output", f"{k}={t}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ImportFailed(f"{model_json}: TF.js ({backend}) failed: {(r.stderr or r.stdout).strip()[-2000:]}")
        return {k: np.load(os.path.join(d, f"output_{k}.npy")) for k in outs}


def read_tfjs(path: str, inputs: list[str], outputs: list[str]) -> Source:
    model_json = os.path.join(path, "model.json") if os.path.isdir(path) else path
    gd, sig = tfjs.read(model_json)
    if not outputs and sig.get("outputs"):
        outputs = [f"{sanitize(k)}={v.get('name', k)}" for k, v in sig["outputs"].items()]
    src = from_graph(tfjs.repair(gd, model_json), model_json, inputs, outputs, "tfjs")
    ins = {k: t.name for k, t in src.inputs.items()}
    outs = {k: t.name for k, t in src.outputs.items()}
    with open(os.path.join(TFJSREF, "package.json")) as f:
        version = json.load(f)["dependencies"]["@tensorflow/tfjs-core"]
    src.runtime = f"TF.js {version} (Node, cpu backend)"
    # run.mjs feeds a fixed-batch model one row at a time itself.
    src.run = lambda feeds: _node_run(model_json, "cpu", ins, outs, feeds)
    src.second = (f"TF.js {version} (Node, wasm backend)", lambda feeds: _node_run(model_json, "wasm", ins, outs, feeds))
    return src


def detect(path: str) -> str:
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        if os.path.exists(os.path.join(path, "model.json")):
            return "tfjs"
    elif path.endswith(".json"):
        return "tfjs"
    elif path.endswith((".keras", ".h5", ".hdf5")):
        return "keras"
    elif path.endswith(".pb"):
        return "graphdef"
    if not os.path.exists(path):
        raise ImportFailed(f"{path}: no such file or folder")
    raise ImportFailed(f"{path}: cannot tell its format; give --format savedmodel|keras|graphdef|tfjs")
