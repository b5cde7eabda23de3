"""Frozen GraphDefs: checking them against the pinned TensorFlow, running them
in TensorFlow's own graph runtime, and saving them as a SavedModel.

A frozen graph holds its weights as Const nodes. save_graph turns every
floating-point constant of 64 values or more into a variable, so the version
has its weights in variables/ like every other SavedModel in the repository
(and saved_model.pb stays small); shape, axis and other small constants stay
in the graph, where shape inference needs them. A graph whose weights are all small still
gets its largest one as a variable: the repository expects a variables/ bundle.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import op_def_registry, tensor_util

from .errors import ImportFailed

# Constants at least this large (in values) become variables.
VARIABLE_MIN_SIZE = 64


def tensor_name(name: str) -> str:
    """'node' -> 'node:0'; 'node:1' stays."""
    return name if ":" in name else name + ":0"


def node_name(name: str) -> str:
    return name.split(":")[0].lstrip("^")


def check_ops(gd: graph_pb2.GraphDef, source: str) -> None:
    """Every op must be one the pinned TensorFlow registers."""
    unknown = {}
    for n in gd.node:
        if op_def_registry.get(n.op) is None:
            unknown.setdefault(n.op, n.name)
    if unknown:
        ops = ", ".join(f"{op} (node {name!r})" for op, name in sorted(unknown.items()))
        raise ImportFailed(f"{source}: TensorFlow {tf.__version__} does not know the op{'s' if len(unknown) > 1 else ''} {ops}")


def placeholders(gd: graph_pb2.GraphDef) -> list[str]:
    return [n.name for n in gd.node if n.op == "Placeholder"]


def check_tensors(gd: graph_pb2.GraphDef, names: dict[str, str], what: str, source: str) -> None:
    """Each tensor name (node[:index]) must be a node of gd; what is 'input' or 'output'."""
    nodes = {n.name: n for n in gd.node}
    for key, t in names.items():
        n = nodes.get(node_name(t))
        if n is None:
            hint = placeholders(gd) if what == "input" else sinks(gd)[:10]
            raise ImportFailed(f"{source}: {what} {key}={t}: the graph has no node {node_name(t)!r} ({'its placeholders are' if what == 'input' else 'its last nodes include'} {', '.join(hint) or 'none'})")
        if what == "input" and n.op != "Placeholder":
            raise ImportFailed(f"{source}: input {key}={t}: node {n.name!r} is a {n.op}, not a Placeholder (placeholders: {', '.join(placeholders(gd))})")


def sinks(gd: graph_pb2.GraphDef) -> list[str]:
    """Nodes no other node reads: a graph's outputs, unless told otherwise."""
    used = {node_name(i) for n in gd.node for i in n.input}
    return [n.name for n in gd.node if n.name not in used and n.op not in ("Const", "NoOp", "Placeholder")]


def run_graph(gd: graph_pb2.GraphDef, feeds: dict[str, np.ndarray], fetches: dict[str, str], rows: bool = False) -> dict[str, np.ndarray]:
    """Runs gd in a TF1 session: feeds are keyed by tensor name, fetches map
    keys to tensor names. rows: feed one row of the batch at a time (a model
    with a fixed batch of 1) and concatenate the outputs."""
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(gd, name="")
        fetch = {k: g.get_tensor_by_name(tensor_name(t)) for k, t in fetches.items()}
        feed = {g.get_tensor_by_name(tensor_name(t)): v for t, v in feeds.items()}
        with tf.compat.v1.Session(graph=g) as sess:
            if not rows:
                return {k: np.asarray(v) for k, v in sess.run(fetch, feed).items()}
            n = len(next(iter(feed.values())))
            outs = [sess.run(fetch, {t: v[i:i + 1] for t, v in feed.items()}) for i in range(n)]
    return {k: np.concatenate([o[k] for o in outs]) for k in fetch}


def save_graph(gd: graph_pb2.GraphDef, inputs: dict[str, str], outputs: dict[str, str], out_dir: str, signature: str) -> None:
    """Writes gd as a SavedModel in out_dir with one signature: inputs and
    outputs map signature keys to tensor names of gd."""
    floats = {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor) for n in gd.node
              if n.op == "Const" and n.attr["dtype"].type in (tf.float32.as_datatype_enum, tf.float16.as_datatype_enum)}
    big = {k: v for k, v in floats.items() if v.size >= VARIABLE_MIN_SIZE}
    if not big and floats:
        # A tiny graph still gets a variables/ bundle: its largest constant.
        k = max(floats, key=lambda k: floats[k].size)
        big[k] = floats[k]
    kept = graph_pb2.GraphDef()
    kept.versions.CopyFrom(gd.versions)
    kept.library.CopyFrom(gd.library)
    kept.node.extend(n for n in gd.node if n.name not in big)
    with tf.Graph().as_default() as g:
        variables, input_map = {}, {}
        # The variables' own ops live under a scope of their own, so none
        # takes a name the imported graph uses.
        with tf.name_scope("edgeinfer_weights"):
            for name, value in big.items():
                # Zeros as the initial value: the weights are loaded into the
                # session below, so no copy of them is left in the graph.
                v = tf.compat.v1.Variable(tf.zeros(value.shape, value.dtype), name=name.replace(":", "_"), trainable=False)
                variables[name] = (v, value)
                input_map[name + ":0"] = v.read_value()
        keys_in, keys_out = list(inputs), list(outputs)
        tensors = tf.graph_util.import_graph_def(kept, input_map=input_map or None, name="",
                                                 return_elements=[tensor_name(inputs[k]) for k in keys_in] +
                                                 [tensor_name(outputs[k]) for k in keys_out])
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for v, value in variables.values():
                v.load(value, sess)
            sig = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
                inputs=dict(zip(keys_in, tensors[:len(keys_in)])),
                outputs=dict(zip(keys_out, tensors[len(keys_in):])),
            )
            b = tf.compat.v1.saved_model.Builder(out_dir)
            b.add_meta_graph_and_variables(sess, [tf.compat.v1.saved_model.tag_constants.SERVING],
                                           signature_def_map={signature: sig}, strip_default_attrs=True)
            b.save()
    if not os.path.exists(os.path.join(out_dir, "variables", "variables.index")):
        raise ImportFailed(f"{out_dir}: TensorFlow wrote no variables: the graph has no floating-point constants (weights)")
