"""TF.js graph models (model.json and its weight shards) read without the
tensorflowjs package.

model.json's modelTopology is a GraphDef in protobuf's JSON form, which
TensorFlow's own protobuf classes parse; its Const nodes carry no values. The
values are in the shards the weightsManifest lists: each group's shards are
concatenated and its weights follow one another in order, each stored as its
dtype or quantized (uint8/uint16: value = q * scale + min; float16).

The TF.js converter fuses ops into forms the pinned TensorFlow rejects or
does not have (_FusedConv2D without TArgs, FusedDepthwiseConv2dNative,
_FusedMatMul, Prelu). repair() rewrites each into the plain ops it stands for
(Conv2D/DepthwiseConv2dNative/MatMul, then BiasAdd or a batch norm, then the
activation); TensorFlow's graph optimizer fuses them again when it runs.
"""
from __future__ import annotations

import json
import os

import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2, types_pb2
from tensorflow.python.framework import tensor_util

from .errors import ImportFailed

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_, "float16": np.float16}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def read(model_json: str) -> tuple[graph_pb2.GraphDef, dict]:
    """Returns the GraphDef with every weight filled in, and model.json's
    signature (its inputs and outputs, {} when absent)."""
    try:
        with open(model_json) as f:
            j = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ImportFailed(f"{model_json}: not readable as JSON: {e}")
    if not isinstance(j, dict):
        raise ImportFailed(f"{model_json}: not a TF.js graph model: the file holds a JSON {type(j).__name__}, not an object")
    fmt = j.get("format")
    topo = j.get("modelTopology")
    if fmt == "layers-model" or (isinstance(topo, dict) and "class_name" in topo):
        raise ImportFailed(f"{model_json}: a TF.js layers model (a Keras model), not a graph model: "
                           "save it from Keras as .keras or .h5 and import that")
    if not isinstance(topo, dict) or "node" not in topo or "weightsManifest" not in j:
        raise ImportFailed(f"{model_json}: not a TF.js graph model: it needs modelTopology.node and weightsManifest "
                           f"(found keys {', '.join(sorted(j)) or 'none'})")
    gd = graph_pb2.GraphDef()
    try:
        json_format.ParseDict(topo, gd, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise ImportFailed(f"{model_json}: modelTopology is not a TensorFlow GraphDef: {e}")
    weights = read_weights(model_json, j["weightsManifest"])
    consts = {n.name: n for n in gd.node if n.op == "Const"}
    for name, value in weights.items():
        n = consts.get(name)
        if n is None:
            raise ImportFailed(f"{model_json}: weight {name!r} has no Const node in the graph")
        n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        n.attr["dtype"].type = n.attr["value"].tensor.dtype
    missing = [n for n in consts if n not in weights]
    if missing:
        raise ImportFailed(f"{model_json}: Const node{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])} "
                           "without a value in the weights manifest")
    return gd, j.get("signature") or {}


def read_weights(model_json: str, manifest: list) -> dict[str, np.ndarray]:
    base = os.path.dirname(model_json)
    out = {}
    for gi, group in enumerate(manifest):
        chunks = []
        for rel in group.get("paths", []):
            p = os.path.join(base, rel)
            try:
                with open(p, "rb") as f:
                    chunks.append(f.read())
            except OSError as e:
                raise ImportFailed(f"{model_json}: weight shard {rel} (group {gi}): {e.strerror}: {p}")
        buf = b"".join(chunks)
        off = 0
        for w in group.get("weights", []):
            name, shape, dtype = w["name"], [int(d) for d in w.get("shape", [])], w.get("dtype", "float32")
            if dtype not in _DTYPES:
                raise ImportFailed(f"{model_json}: weight {name!r} has dtype {dtype!r}; edgeinfer-import reads {', '.join(_DTYPES)}")
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q and q.get("dtype") not in _QUANT:
                raise ImportFailed(f"{model_json}: weight {name!r} is quantized as {q.get('dtype')!r}; known: {', '.join(_QUANT)}")
            stored = np.dtype(_QUANT[q["dtype"]] if q else _DTYPES[dtype])
            size = count * stored.itemsize
            if off + size > len(buf):
                raise ImportFailed(f"{model_json}: weight shards of group {gi} ({', '.join(group.get('paths', []))}) hold "
                                   f"{len(buf)} bytes; weight {name!r} needs bytes {off}..{off + size} (a shard is truncated or from another model)")
            raw = np.frombuffer(buf, dtype=stored.newbyteorder("<"), count=count, offset=off)
            off += size
            if q and q["dtype"] in ("uint8", "uint16"):
                # As TF.js does (io_utils): in double precision, rounded to
                # float32 once; int32 weights round halves up (Math.round).
                v64 = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
                value = np.floor(v64 + 0.5).astype(np.int32) if dtype == "int32" else v64.astype(np.float32)
            else:
                value = raw.astype(_DTYPES[dtype] if dtype != "float16" else np.float32)
            out[name] = value.reshape(shape)
        if off != len(buf):
            raise ImportFailed(f"{model_json}: weight shards of group {gi} ({', '.join(group.get('paths', []))}) hold "
                               f"{len(buf)} bytes, the manifest's weights {off}: a shard is from another model")
    return out


# -- repairs -----------------------------------------------------------------

_FUSED = {"_FusedConv2D": "Conv2D", "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative", "_FusedMatMul": "MatMul"}
# Attributes the plain op keeps, per plain op.
_KEEP = {
    "Conv2D": ("T", "strides", "padding", "explicit_paddings", "data_format", "dilations", "use_cudnn_on_gpu"),
    "DepthwiseConv2dNative": ("T", "strides", "padding", "explicit_paddings", "data_format", "dilations"),
    "MatMul": ("T", "transpose_a", "transpose_b"),
}
_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh", "LeakyRelu", "Prelu"}


class _Rewriter:
    def __init__(self, gd: graph_pb2.GraphDef):
        self.gd = gd
        self.out: list[node_def_pb2.NodeDef] = []

    def node(self, name, op, inputs, t, **attrs) -> str:
        n = node_def_pb2.NodeDef(name=name, op=op, input=inputs)
        if t is not None:
            n.attr["T"].type = t
        for k, v in attrs.items():
            n.attr[k].CopyFrom(v)
        self.out.append(n)
        return name

    def const(self, name, value: np.ndarray) -> str:
        n = node_def_pb2.NodeDef(name=name, op="Const")
        n.attr["dtype"].type = tensor_util.make_tensor_proto(value).dtype
        n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        self.out.append(n)
        return name

    def prelu(self, name, x, alpha, t) -> str:
        # prelu(x) = relu(x) + alpha * min(x, 0)
        zero = self.const(name + "/zero", np.zeros((), np.float32))
        pos = self.node(name + "/pos", "Relu", [x], t)
        neg = self.node(name + "/neg", "Minimum", [x, zero], t)
        scaled = self.node(name + "/scaled", "Mul", [alpha, neg], t)
        return self.node(name, "AddV2", [pos, scaled], t)

    def activation(self, name, act, x, n, alpha_input, t) -> str:
        if act == "Prelu":
            return self.prelu(name, x, alpha_input, t)
        attrs = {}
        if act == "LeakyRelu":
            key = "leakyrelu_alpha" if "leakyrelu_alpha" in n.attr else "alpha"
            alpha = n.attr[key].f if key in n.attr else 0.2  # TensorFlow's default slope
            attrs["alpha"] = attr_value_pb2.AttrValue(f=alpha)
        return self.node(name, act, [x], t, **attrs)

    def fused(self, n: node_def_pb2.NodeDef, source: str) -> None:
        plain = _FUSED[n.op]
        ops = [s.decode() for s in n.attr["fused_ops"].list.s]
        num_args = n.attr["num_args"].i
        data, args = list(n.input[:2]), list(n.input[2:2 + num_args])
        control = [i for i in n.input if i.startswith("^")]
        t = n.attr["T"].type or types_pb2.DT_FLOAT
        attrs = {k: n.attr[k] for k in _KEEP[plain] if k in n.attr and k != "T"}
        if plain != "MatMul" and "data_format" not in attrs:
            attrs["data_format"] = attr_value_pb2.AttrValue(s=b"NHWC")
        steps = list(ops)
        x = self.node(n.name + "/" + plain, plain, data + control, t, **attrs)
        fmt = attrs.get("data_format", attr_value_pb2.AttrValue(s=b"NHWC"))
        if steps and steps[0] == "BiasAdd":
            x = self.node(n.name + "/BiasAdd", "BiasAdd", [x, args.pop(0)], t, data_format=fmt)
            steps.pop(0)
        elif steps and steps[0] == "FusedBatchNorm":
            scale, offset, mean, var = args[:4]
            del args[:4]
            x = self.node(n.name + "/FusedBatchNorm", "FusedBatchNormV3", [x, scale, offset, mean, var], t,
                          U=attr_value_pb2.AttrValue(type=types_pb2.DT_FLOAT), epsilon=n.attr["epsilon"],
                          data_format=fmt, is_training=attr_value_pb2.AttrValue(b=False))
            steps.pop(0)
        if len(steps) > 1 or (steps and steps[0] not in _ACTIVATIONS):
            raise ImportFailed(f"{source}: node {n.name!r} ({n.op}) fuses {ops}, which edgeinfer-import cannot unfuse")
        if steps:
            self.activation(n.name + "/" + steps[0], steps[0], x, n, args[0] if args else None, t)
        # The last op of the chain takes the fused node's name, so tensor
        # names given on the command line or in model.json's signature hold.
        self.out[-1].name = n.name

    def run(self, source: str) -> graph_pb2.GraphDef:
        for n in self.gd.node:
            if n.op in _FUSED:
                self.fused(n, source)
            elif n.op == "Prelu":
                self.prelu(n.name, n.input[0], n.input[1], n.attr["T"].type or types_pb2.DT_FLOAT)
            else:
                self.out.append(n)
        gd = graph_pb2.GraphDef()
        gd.versions.CopyFrom(self.gd.versions)
        gd.library.CopyFrom(self.gd.library)
        gd.node.extend(self.out)
        return gd


def repair(gd: graph_pb2.GraphDef, source: str) -> graph_pb2.GraphDef:
    """Unfuses the TF.js converter's fused ops; each rewritten node's value
    keeps its name."""
    return _Rewriter(gd).run(source)
