"""Tests of edgeinfer-import (tools/import/edgeinfer_import), through its real CLI.

    .venv/bin/python -m pytest -q tools/import        # from the repository root

Needs `make build` (bin/tfmodels, bin/edgeinfer-import) and the TF.js reference
runtime (`cd tools/import/tfjsref && npm ci --no-audit --no-fund`). Every model
is tiny and written by the tests themselves into pytest's temporary folders:
nothing is downloaded.

Each import path is checked three ways: (a) the version folder has what the
repository expects, (b) `bin/tfmodels check` loads it through the Go binding and
reproduces the golden outputs within 1e-5, and (c) the golden outputs are the
source's own outputs, computed here independently of the importer (Keras,
a TF1 session on the GraphDef, the SavedModel's signature, TF.js in Node).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLI = ROOT / "bin" / "edgeinfer-import"
TFMODELS = ROOT / "bin" / "tfmodels"
RUN_MJS = HERE / "tfjsref" / "run.mjs"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))

# How far the imported model (through the Go binding) and the golden outputs
# may be from the source's own runtime.
TOL = 1e-5
SIZE, CHANNELS, CLASSES = 8, 3, 5


# -- running the tools ----------------------------------------------------------

def cli(*args, cwd) -> subprocess.CompletedProcess:
    """bin/edgeinfer-import, run from cwd (not the repository root)."""
    return subprocess.run([str(CLI), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@dataclasses.dataclass
class Imported:
    dir: Path
    inputs: dict  # golden/input_<key>.npy
    outputs: dict  # golden/output_<key>.npy
    manifest: dict  # edgeinfer.toml
    record: dict  # import.json


def import_ok(source, repo: Path, name: str, *flags, cwd) -> Imported:
    """Imports source and checks (a): the version folder holds what the repository expects."""
    r = cli("--repo", repo, "--name", name, source, *flags, cwd=cwd)
    assert r.returncode == 0, f"edgeinfer-import failed:\n{r.stderr[-4000:]}"
    d = repo / name / "1"
    assert r.stdout.strip().splitlines()[-1] == str(d)
    # Nothing but the version itself: the staging folder was renamed into place.
    assert sorted(os.listdir(repo / name)) == ["1"]
    for f in ("saved_model.pb", "variables/variables.index", "edgeinfer.toml", "import.json"):
        assert (d / f).is_file(), f"{d}: no {f}"
    golden = d / "golden"
    ins = {p.name[len("input_"):-4]: np.load(p) for p in sorted(golden.glob("input_*.npy"))}
    outs = {p.name[len("output_"):-4]: np.load(p) for p in sorted(golden.glob("output_*.npy"))}
    assert ins, f"{golden}: no input_*.npy"
    assert outs, f"{golden}: no output_*.npy"
    with open(d / "edgeinfer.toml", "rb") as f:
        man = tomllib.load(f)
    with open(d / "import.json") as f:
        record = json.load(f)
    return Imported(d, ins, outs, man, record)


def go_check(imp: Imported) -> dict[str, float]:
    """(b): bin/tfmodels check loads the version through the Go binding (the C
    API) and reproduces every golden output within 1e-5. Returns key -> Δ."""
    r = subprocess.run([str(TFMODELS), "check", str(imp.dir)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"tfmodels check {imp.dir} failed:\n{r.stdout}{r.stderr}"
    lines = [l for l in r.stdout.splitlines() if l.startswith("ok ")]
    assert len(lines) == 1, r.stdout
    # ok   <dir>   <key>[shape] Δ<maxdiff> <key>[shape] Δ<maxdiff> (load+run 58ms)
    rest = lines[0].split(str(imp.dir), 1)[1]
    found = re.findall(r"(\w+)\[([0-9 ]*)\] Δ(\S+)", rest)
    assert found, lines[0]
    deltas = {}
    for key, shape, delta in found:
        assert key in imp.outputs, f"tfmodels checked output {key!r}, the golden outputs are {list(imp.outputs)}"
        assert [int(s) for s in shape.split()] == list(imp.outputs[key].shape)
        deltas[key] = float(delta)
    assert set(deltas) == set(imp.outputs)
    assert all(d <= TOL for d in deltas.values()), f"Go binding differs from the source: {deltas}"
    return deltas


def assert_close(got: dict, want: dict, tol: float = TOL) -> None:
    """(c): the golden outputs are the source's own outputs."""
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        diff = float(np.max(np.abs(got[k].astype(np.float64) - want[k])))
        assert diff <= tol, f"output {k}: differs from the source's runtime by {diff:.3g}"


def tfjs_run(model_json: Path, inputs: dict[str, np.ndarray], outputs: dict[str, str], out: Path,
             backend: str = "cpu") -> dict[str, np.ndarray]:
    """The TF.js original in Node: inputs keyed by input node, outputs key -> tensor."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["node", str(RUN_MJS), "--model", str(model_json), "--backend", backend, "--out", str(out)]
    for node, v in inputs.items():
        p = out / f"in_{node}.npy"
        np.save(p, np.ascontiguousarray(v, np.float32))
        cmd += ["--input", f"{node}={p}"]
    for k, t in outputs.items():
        cmd += ["--output", f"{k}={t}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {k: np.load(out / f"output_{k}.npy") for k in outputs}


def tf1_run(gd, feeds: dict[str, np.ndarray], fetches: dict[str, str]) -> dict[str, np.ndarray]:
    """A frozen GraphDef in a TF1 session: feeds and fetches by tensor name."""
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run({k: g.get_tensor_by_name(t) for k, t in fetches.items()},
                            {g.get_tensor_by_name(t): v for t, v in feeds.items()})


def expect_failure(repo: Path, name: str, source, *flags, cwd, says: list[str]) -> str:
    """Runs an import that must be refused: exit 1, one `edgeinfer-import: ...`
    line naming what is wrong (every part of says), no traceback."""
    r = cli("--repo", repo, "--name", name, source, *flags, cwd=cwd)
    assert r.returncode == 1, f"exit {r.returncode}; stdout {r.stdout!r}; stderr:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stdout.strip() == ""
    msgs = [l for l in r.stderr.splitlines() if l.startswith("edgeinfer-import: ")]
    assert len(msgs) == 1, r.stderr[-3000:]
    assert r.stderr.rstrip().endswith(msgs[0]), "the message is the last thing written"
    for part in says:
        assert part in msgs[0], f"{part!r} not in {msgs[0]!r}"
    return msgs[0]


def assert_nothing_left(repo: Path, name: str) -> None:
    assert not (repo / name).exists(), f"{repo / name} left behind: {os.listdir(repo / name)}"


def tree(d: Path) -> dict[str, str]:
    """Every file below d -> its sha256."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def labels(tmp_path_factory) -> Path:
    """Class names for the classify imports (edgeinfer requires labels for classify)."""
    f = tmp_path_factory.mktemp("labels") / "labels.txt"
    f.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    return f


# -- the tiny Keras model ---------------------------------------------------------

@pytest.fixture(scope="session")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    import keras
    d = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(3)
    m = keras.Sequential([
        keras.Input((SIZE, SIZE, CHANNELS)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(CLASSES, activation="softmax"),
    ])
    files = {".keras": d / "tiny.keras", ".h5": d / "tiny.h5"}
    m.save(files[".keras"])
    m.save(files[".h5"])
    return files


def keras_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import keras
    model = keras.saving.load_model(path, compile=False)
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_imports_and_reproduces_keras_through_go_binding(suffix, keras_files, labels, tmp_path):
    imp = import_ok(keras_files[suffix], tmp_path / "repo", "k", "--labels", labels, cwd=tmp_path)
    go_check(imp)
    [(key, x)] = imp.inputs.items()
    assert x.shape == (2, SIZE, SIZE, CHANNELS)
    [(out_key, y)] = imp.outputs.items()
    assert_close({out_key: y}, {out_key: keras_outputs(keras_files[suffix], x)})
    assert imp.manifest["source"]["format"] == "keras"
    # Dense(softmax) ends the graph in Softmax: the plugin must not apply another.
    assert imp.manifest["output"] == {"logits": out_key, "softmax": False}
    assert "batch" not in imp.manifest["input"]


# -- the tiny frozen GraphDef -----------------------------------------------------

@pytest.fixture(scope="session")
def frozen_graph(tmp_path_factory):
    """x [N,8,8,3] -> conv+relu -> feat (mean) -> logits -> probs (softmax)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    rng = np.random.default_rng(1)
    w = tf.Variable(rng.normal(0, 0.5, (3, 3, CHANNELS, 4)).astype(np.float32))
    b = tf.Variable(rng.normal(0, 0.1, (4,)).astype(np.float32))
    fw = tf.Variable(rng.normal(0, 1, (4, CLASSES)).astype(np.float32))
    fb = tf.Variable(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, CHANNELS], tf.float32, name="x")])
    def f(x):
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b))
        feat = tf.reduce_mean(h, [1, 2], name="feat")
        logits = tf.nn.bias_add(tf.matmul(feat, fw), fb, name="logits")
        return tf.nn.softmax(logits, name="probs")

    gd = convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
    names = {n.name for n in gd.node}
    assert {"x", "feat", "logits", "probs"} <= names
    path = tmp_path_factory.mktemp("graphdef") / "tiny_frozen.pb"
    path.write_bytes(gd.SerializeToString())
    return path, gd


def test_frozen_graphdef_imports_with_named_input_and_output_and_reproduces_tf1_session(frozen_graph, labels, tmp_path):
    path, gd = frozen_graph
    imp = import_ok(path, tmp_path / "repo", "g", "--input", "x=x", "--output", "probs=probs", "--labels", labels,
                    cwd=tmp_path)
    go_check(imp)
    assert list(imp.inputs) == ["x"] and list(imp.outputs) == ["probs"]
    want = tf1_run(gd, {"x:0": imp.inputs["x"]}, {"probs": "probs:0"})
    assert_close(imp.outputs, want)
    assert imp.manifest["source"]["format"] == "graphdef"
    assert imp.manifest["output"] == {"logits": "probs", "softmax": False}


def test_frozen_graphdef_inner_tensor_can_be_chosen_as_output(frozen_graph, labels, tmp_path):
    path, gd = frozen_graph
    imp = import_ok(path, tmp_path / "repo", "g", "--input", "x=x", "--output", "scores=logits:0", "--labels", labels,
                    cwd=tmp_path)
    go_check(imp)
    assert list(imp.outputs) == ["scores"]
    assert imp.outputs["scores"].shape == (2, CLASSES)
    want = tf1_run(gd, {"x:0": imp.inputs["x"]}, {"scores": "logits:0"})
    assert_close(imp.outputs, want)
    # Not the sink: these are logits, not probabilities, so the plugin applies the softmax.
    assert not np.allclose(imp.outputs["scores"].sum(axis=1), 1.0)
    assert imp.manifest["output"] == {"logits": "scores", "softmax": True}


# -- the tiny TF2 SavedModel ------------------------------------------------------

@pytest.fixture(scope="session")
def saved_model(tmp_path_factory) -> Path:
    """serving_default -> {probs, logits, features}; classify -> {scores}."""
    rng = np.random.default_rng(2)
    spec = tf.TensorSpec([None, SIZE, SIZE, CHANNELS], tf.float32, name="image")

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(0, 0.5, (3, 3, CHANNELS, 4)).astype(np.float32))
            self.fw = tf.Variable(rng.normal(0, 1, (4, CLASSES)).astype(np.float32))
            self.fb = tf.Variable(rng.normal(0, 0.1, (CLASSES,)).astype(np.float32))

        def _net(self, image):
            feat = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(image, self.w, 1, "SAME")), [1, 2])
            return feat, tf.matmul(feat, self.fw) + self.fb

        @tf.function(input_signature=[spec])
        def serve(self, image):
            feat, logits = self._net(image)
            return {"probs": tf.nn.softmax(logits), "logits": logits, "features": feat}

        @tf.function(input_signature=[spec])
        def classify(self, image):
            return {"scores": tf.nn.softmax(self._net(image)[1] * 2.0)}

    m = Tiny()
    d = tmp_path_factory.mktemp("savedmodel") / "tiny_saved_model"
    tf.saved_model.save(m, str(d), signatures={"serving_default": m.serve.get_concrete_function(),
                                                "classify": m.classify.get_concrete_function()})
    return d


def signature_outputs(path: Path, signature: str, x: np.ndarray) -> dict[str, np.ndarray]:
    fn = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(image=tf.constant(x)).items()}


def test_savedmodel_named_signature_imports_and_reproduces_the_signature(saved_model, labels, tmp_path):
    imp = import_ok(saved_model, tmp_path / "repo", "s", "--signature", "classify", "--labels", labels, cwd=tmp_path)
    go_check(imp)
    assert list(imp.inputs) == ["image"] and list(imp.outputs) == ["scores"]
    want = signature_outputs(saved_model, "classify", imp.inputs["image"])
    assert_close(imp.outputs, want)
    assert imp.manifest["source"]["format"] == "savedmodel"
    assert imp.manifest["output"] == {"logits": "scores", "softmax": False}


def test_savedmodel_outputs_can_be_chosen_and_renamed(saved_model, labels, tmp_path):
    imp = import_ok(saved_model, tmp_path / "repo", "s", "--output", "class_probs=probs", "--output", "feats=features",
                    "--set", "output.logits=class_probs", "--set", "output.softmax=false", "--labels", labels,
                    cwd=tmp_path)
    go_check(imp)
    # Exactly the chosen outputs, under their new keys; logits is left out.
    assert sorted(imp.outputs) == ["class_probs", "feats"]
    want = signature_outputs(saved_model, "serving_default", imp.inputs["image"])
    assert_close(imp.outputs, {"class_probs": want["probs"], "feats": want["features"]})
    with open(imp.dir / "golden" / "signatures.json") as f:
        sigs = json.dumps(json.load(f))
    assert "class_probs" in sigs and "feats" in sigs
    assert imp.manifest["output"] == {"logits": "class_probs", "softmax": False}


# -- tiny TF.js graph models --------------------------------------------------------

def _b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def _type(t: str = "DT_FLOAT") -> dict:
    return {"type": t}


def _ints(*v) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


def _strs(*v: bytes) -> dict:
    return {"list": {"s": [_b64(s) for s in v]}}


def _const(name: str, shape, dtype: str = "DT_FLOAT") -> dict:
    # As the converter writes it: dtype and shape, no content (the values are in the shards).
    return {"name": name, "op": "Const", "attr": {
        "dtype": {"type": dtype},
        "value": {"tensor": {"dtype": dtype, "tensorShape": {"dim": [{"size": str(d)} for d in shape]}}}}}


def _conv_attrs(fused_ops: list[bytes]) -> dict:
    return {"T": _type(), "strides": _ints(1, 1, 1, 1), "padding": {"s": _b64(b"SAME")},
            "data_format": {"s": _b64(b"NHWC")}, "dilations": _ints(1, 1, 1, 1),
            "fused_ops": _strs(*fused_ops), "num_args": {"i": "1"}}


def tfjs_weights(seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv/weights": rng.normal(0, 0.6, (3, 3, CHANNELS, 4)).astype(np.float32),
        "conv/bias": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "dw/weights": rng.normal(0, 2.0, (3, 3, 4, 1)).astype(np.float32),
        "dw/bias": rng.normal(0, 0.5, (4,)).astype(np.float32),
        "gap/axes": np.array([1, 2], np.int32),
        "fc/weights": rng.normal(0, 1.0, (4, CLASSES)).astype(np.float32),
        "fc/bias": rng.normal(-0.5, 1.0, (CLASSES,)).astype(np.float32),
        "prelu/alpha": rng.uniform(0.05, 0.5, (CLASSES,)).astype(np.float32),
    }


@dataclasses.dataclass
class TfjsModel:
    json: Path
    shards: list[Path]
    weights: dict[str, np.ndarray]


def write_tfjs_model(folder: Path, *, batch: int = -1, quantize: dict[str, str] | None = None,
                     last_op: str = "Softmax", weights: dict[str, np.ndarray] | None = None) -> TfjsModel:
    """A TF.js graph model as the converter writes it, with the fused ops the
    pinned TensorFlow rejects:

        x [batch,8,8,3] -> _FusedConv2D(BiasAdd,Relu) -> FusedDepthwiseConv2dNative(BiasAdd,Relu6)
          -> Mean -> _FusedMatMul(BiasAdd) -> Prelu -> probs (Softmax, or last_op)

    The weights follow one another in two shard files, the cut falling inside
    a weight. quantize: weight name -> "uint8" (scale/min) or "float16"."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights or tfjs_weights()
    quantize = quantize or {}
    nodes = [
        {"name": "x", "op": "Placeholder", "attr": {
            "dtype": _type(), "shape": {"shape": {"dim": [{"size": str(d)} for d in (batch, SIZE, SIZE, CHANNELS)]}}}},
        *[_const(n, v.shape, "DT_INT32" if v.dtype == np.int32 else "DT_FLOAT") for n, v in weights.items()],
        {"name": "conv/Relu", "op": "_FusedConv2D", "input": ["x", "conv/weights", "conv/bias"],
         "device": "/device:CPU:0", "attr": _conv_attrs([b"BiasAdd", b"Relu"])},
        {"name": "dw/Relu6", "op": "FusedDepthwiseConv2dNative", "input": ["conv/Relu", "dw/weights", "dw/bias"],
         "attr": _conv_attrs([b"BiasAdd", b"Relu6"])},
        {"name": "gap/Mean", "op": "Mean", "input": ["dw/Relu6", "gap/axes"],
         "attr": {"T": _type(), "Tidx": _type("DT_INT32"), "keep_dims": {"b": False}}},
        {"name": "fc/BiasAdd", "op": "_FusedMatMul", "input": ["gap/Mean", "fc/weights", "fc/bias"],
         "device": "/device:CPU:0", "attr": {"T": _type(), "transpose_a": {"b": False}, "transpose_b": {"b": False},
                                            "fused_ops": _strs(b"BiasAdd"), "num_args": {"i": "1"}}},
        {"name": "prelu", "op": "Prelu", "input": ["fc/BiasAdd", "prelu/alpha"], "attr": {"T": _type()}},
        {"name": "probs", "op": last_op, "input": ["prelu"], "attr": {"T": _type()}},
    ]
    specs, data = [], []
    for name, v in weights.items():
        spec = {"name": name, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"}
        q = quantize.get(name)
        if q == "uint8":
            lo, hi = float(v.min()), float(v.max())
            scale = (hi - lo) / 255
            data.append(np.round((v - lo) / scale).astype(np.uint8).tobytes())
            spec["quantization"] = {"dtype": "uint8", "scale": scale, "min": lo, "original_dtype": "float32"}
        elif q == "float16":
            data.append(v.astype("<f2").tobytes())
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        else:
            data.append(v.astype("<i4" if v.dtype == np.int32 else "<f4").tobytes())
        specs.append(spec)
    buf = b"".join(data)
    cut = len(buf) // 2 + 1  # odd: inside a weight, not on a value boundary
    shards = [folder / "group1-shard1of2.bin", folder / "group1-shard2of2.bin"]
    shards[0].write_bytes(buf[:cut])
    shards[1].write_bytes(buf[cut:])
    model = {
        "format": "graph-model", "generatedBy": "2.15.0", "convertedBy": "TensorFlow.js Converter v4.22.0",
        "modelTopology": {"node": nodes, "library": {}, "versions": {"producer": 1482}},
        "weightsManifest": [{"paths": [s.name for s in shards], "weights": specs}],
    }
    path = folder / "model.json"
    path.write_text(json.dumps(model, indent=1))
    return TfjsModel(path, shards, weights)


QUANTIZED = {"conv/weights": "uint8", "dw/weights": "float16", "fc/weights": "uint8", "dw/bias": "uint8",
             "prelu/alpha": "float16"}


def check_tfjs_import(model: TfjsModel, imp: Imported, tmp_path: Path) -> dict[str, np.ndarray]:
    """(b) and (c) for a TF.js import; returns TF.js's own output."""
    go_check(imp)
    assert list(imp.inputs) == ["x"] and list(imp.outputs) == ["probs"]
    want = tfjs_run(model.json, {"x": imp.inputs["x"]}, {"probs": "probs"}, tmp_path / "tfjs-out")
    assert_close(imp.outputs, want)
    return want


def assert_unfused(imp: Imported) -> None:
    """The version holds the plain ops; none of the converter's fused ops is left."""
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((imp.dir / "saved_model.pb").read_bytes())
    ops = {n.op for mg in sm.meta_graphs for n in mg.graph_def.node}
    ops |= {n.op for mg in sm.meta_graphs for f in mg.graph_def.library.function for n in f.node_def}
    assert not ops & {"_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul", "Prelu"}, ops
    assert {"Conv2D", "DepthwiseConv2dNative", "MatMul", "BiasAdd", "Relu", "Relu6", "Softmax"} <= ops, ops


@pytest.fixture(scope="session")
def tfjs_float_import(tmp_path_factory, labels):
    """The float32 TF.js model, imported once (with a matching --checksums file)."""
    d = tmp_path_factory.mktemp("tfjs-float")
    model = write_tfjs_model(d / "model")
    sums = d / "model" / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(s.read_bytes()).hexdigest()}  {s.name}\n" for s in model.shards))
    imp = import_ok(model.json, d / "repo", "tfjs", "--checksums", sums, "--labels", labels, cwd=d)
    return model, imp


def test_tfjs_graph_model_fused_ops_are_unfused_and_match_tfjs(tfjs_float_import, tmp_path):
    model, imp = tfjs_float_import
    assert len(model.shards) == 2 and all(s.stat().st_size > 0 for s in model.shards)
    check_tfjs_import(model, imp, tmp_path)
    assert_unfused(imp)
    assert imp.manifest["source"]["format"] == "tfjs"


def test_tfjs_quantized_weights_are_dequantized_and_match_tfjs(tfjs_float_import, labels, tmp_path):
    _, float_imp = tfjs_float_import
    model = write_tfjs_model(tmp_path / "model", quantize=QUANTIZED)
    manifest = json.loads(model.json.read_text())["weightsManifest"][0]["weights"]
    assert {w["quantization"]["dtype"] for w in manifest if "quantization" in w} == {"uint8", "float16"}
    imp = import_ok(model.json, tmp_path / "repo", "q", "--labels", labels, cwd=tmp_path)
    want = check_tfjs_import(model, imp, tmp_path)
    assert_unfused(imp)
    # The same weights stored at float32 give visibly different outputs for
    # the same input: the quantized values, not the originals, were served.
    np.testing.assert_array_equal(imp.inputs["x"], float_imp.inputs["x"])
    assert np.max(np.abs(want["probs"] - float_imp.outputs["probs"])) > 1e-4


# -- bad inputs: exit 1, one clear line, nothing left behind --------------------------

def test_missing_weight_shard_is_refused_naming_the_shard(tmp_path):
    model = write_tfjs_model(tmp_path / "model")
    model.shards[1].unlink()
    expect_failure(tmp_path / "repo", "m", model.json, cwd=tmp_path,
                   says=[str(model.json), "group1-shard2of2.bin", "No such file"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_truncated_weight_shard_is_refused_naming_the_shards(tmp_path):
    model = write_tfjs_model(tmp_path / "model")
    data = model.shards[1].read_bytes()
    model.shards[1].write_bytes(data[:-10])
    expect_failure(tmp_path / "repo", "m", model.json, cwd=tmp_path,
                   says=[str(model.json), "group1-shard2of2.bin", "truncated"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_checksum_mismatch_is_refused_naming_the_shard(tmp_path):
    model = write_tfjs_model(tmp_path / "model")
    sums = tmp_path / "model" / "SHA256SUMS"
    good = hashlib.sha256(model.shards[0].read_bytes()).hexdigest()
    sums.write_text(f"{good}  {model.shards[0].name}\n{'0' * 64}  {model.shards[1].name}\n")
    expect_failure(tmp_path / "repo", "m", model.json, "--checksums", sums, cwd=tmp_path,
                   says=[str(model.shards[1]), "sha256", f"{sums}:2", "not the one pinned"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_unknown_op_is_refused_naming_op_and_node(tmp_path):
    model = write_tfjs_model(tmp_path / "model", last_op="NoSuchOp")
    expect_failure(tmp_path / "repo", "m", model.json, cwd=tmp_path,
                   says=[str(model.json), "does not know", "NoSuchOp", "'probs'"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_tfjs_layers_model_is_refused_as_not_a_graph_model(tmp_path):
    f = tmp_path / "layers" / "model.json"
    f.parent.mkdir()
    f.write_text(json.dumps({
        "format": "layers-model", "generatedBy": "keras v2.15.0", "convertedBy": "TensorFlow.js Converter v4.22.0",
        "modelTopology": {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
            {"class_name": "Dense", "config": {"units": 2, "batch_input_shape": [None, 4]}}]},
            "keras_version": "2.15.0", "backend": "tensorflow"},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": [
            {"name": "dense/kernel", "shape": [4, 2], "dtype": "float32"}]}]}))
    expect_failure(tmp_path / "repo", "m", f, cwd=tmp_path, says=[str(f), "layers model", "not a graph model"])
    assert_nothing_left(tmp_path / "repo", "m")


@pytest.mark.parametrize("content,says", [
    ([1, 2, 3], "JSON list"),
    ({"weights": [], "name": "not a model"}, "modelTopology.node"),
], ids=["list", "object"])
def test_json_that_is_not_a_graph_model_is_refused(content, says, tmp_path):
    f = tmp_path / "thing.json"
    f.write_text(json.dumps(content))
    expect_failure(tmp_path / "repo", "m", f, cwd=tmp_path, says=[str(f), "not a TF.js graph model", says])
    assert_nothing_left(tmp_path / "repo", "m")


def test_unknown_input_tensor_is_refused_naming_it_and_the_placeholders(tmp_path):
    model = write_tfjs_model(tmp_path / "model")
    expect_failure(tmp_path / "repo", "m", model.json, "--input", "image=no_such_input", cwd=tmp_path,
                   says=[str(model.json), "image=no_such_input", "'no_such_input'", "placeholders are x"])
    assert_nothing_left(tmp_path / "repo", "m")


@pytest.mark.parametrize("tensor", ["no_such_node", "logits:7"], ids=["no-node", "no-such-index"])
def test_unknown_output_tensor_is_refused_naming_it(tensor, frozen_graph, tmp_path):
    path, _ = frozen_graph
    expect_failure(tmp_path / "repo", "m", path, "--input", "x=x", "--output", f"out={tensor}", cwd=tmp_path,
                   says=[str(path), f"out={tensor}"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_pb_that_is_not_a_graphdef_is_refused(tmp_path):
    f = tmp_path / "notes.pb"
    f.write_bytes(b"\x93NUMPY this is not a GraphDef \xff\xfe\x00\x01" * 10)
    expect_failure(tmp_path / "repo", "m", f, cwd=tmp_path, says=[str(f), "not a binary GraphDef"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_savedmodel_unknown_signature_is_refused_listing_the_signatures(saved_model, tmp_path):
    expect_failure(tmp_path / "repo", "m", saved_model, "--signature", "no_such_signature", cwd=tmp_path,
                   says=[str(saved_model), "'no_such_signature'", "classify", "serving_default"])
    assert_nothing_left(tmp_path / "repo", "m")


def test_existing_version_is_refused_and_kept_intact(keras_files, labels, tmp_path):
    repo = tmp_path / "repo"
    imp = import_ok(keras_files[".keras"], repo, "k", "--version", "1", "--labels", labels, cwd=tmp_path)
    before = tree(imp.dir)
    expect_failure(repo, "k", keras_files[".h5"], "--version", "1", "--labels", labels, cwd=tmp_path,
                   says=[str(repo / "k" / "1"), "exists", "--version"])
    assert sorted(os.listdir(repo / "k")) == ["1"]
    assert tree(imp.dir) == before


def test_failure_after_staging_removes_the_staging_folder_and_keeps_other_versions(keras_files, labels, tmp_path):
    """A version refused at the last step (the Go check) leaves the model
    folder as it was: only the versions it had, no .<version>.import."""
    repo = tmp_path / "repo"
    (repo / "k" / "1").mkdir(parents=True)
    (repo / "k" / "1" / "marker").write_text("an existing version")
    broken = tmp_path / "tfmodels-broken"
    broken.write_text("#!/bin/sh\necho 'cannot load: broken on purpose' >&2\nexit 3\n")
    broken.chmod(0o755)
    expect_failure(repo, "k", keras_files[".keras"], "--tfmodels", broken, "--labels", labels, cwd=tmp_path,
                   says=["the C API cannot serve the import", "broken on purpose"])
    assert sorted(os.listdir(repo / "k")) == ["1"]
    assert (repo / "k" / "1" / "marker").read_text() == "an existing version"
    # And where the model folder did not exist, it is gone again.
    expect_failure(repo, "fresh", keras_files[".keras"], "--tfmodels", broken, "--labels", labels, cwd=tmp_path,
                   says=["the C API cannot serve the import"])
    assert_nothing_left(repo, "fresh")


# -- the edgeinfer.toml scaffold -------------------------------------------------------

def test_manifest_scaffold_from_flags_for_a_fixed_batch_tfjs_model(tmp_path):
    model = write_tfjs_model(tmp_path / "model", batch=1)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\nfish\nfrog\n")  # a blank line is skipped
    imp = import_ok(model.json, tmp_path / "repo", "fixed", "--task", "classify", "--labels", labels,
                    "--scale", "0.00392156862745098", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                    "--tolerance", "3e-5", cwd=tmp_path)
    man = imp.manifest
    assert man["task"] == "classify"
    assert man["labels"] == ["cat", "dog", "bird", "fish", "frog"]
    inp = man["input"]
    assert inp["key"] == "x"
    assert (inp["height"], inp["width"], inp["channels"]) == (SIZE, SIZE, CHANNELS)
    assert inp["scale"] == pytest.approx(1 / 255, rel=1e-12)
    assert inp["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert inp["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert inp["batch"] == 1  # the placeholder is [1,8,8,3]
    assert man["output"] == {"logits": "probs", "softmax": False}  # the graph ends in Softmax
    assert man["validation"]["tolerance"] == pytest.approx(3e-5)
    assert man["source"]["format"] == "tfjs"
    assert man["source"]["file"] == "model/model.json"
    # A fixed batch of 1 is still validated on several samples, fed one at a time.
    assert imp.inputs["x"].shape == (2, SIZE, SIZE, CHANNELS)
    check_tfjs_import(model, imp, tmp_path)


def test_manifest_scaffold_for_a_dynamic_batch_model_has_no_batch_and_default_tolerance(tfjs_float_import):
    _, imp = tfjs_float_import
    man = imp.manifest
    assert "batch" not in man["input"]
    assert man["labels"] == [f"class{i}" for i in range(CLASSES)]
    assert man["task"] == "classify"
    assert man["input"]["scale"] == pytest.approx(1 / 255)
    assert man["input"]["mean"] == [0.0, 0.0, 0.0] and man["input"]["std"] == [1.0, 1.0, 1.0]
    assert man["output"] == {"logits": "probs", "softmax": False}
    # The default tolerance: ten times how far TF.js's cpu and wasm backends differ, at least 1e-5.
    spread = imp.record["runtimes_differ_by"]
    assert spread is not None
    assert man["validation"]["tolerance"] == pytest.approx(max(1e-5, 10 * spread))
    assert man["source"]["format"] == "tfjs"


def test_manifest_softmax_true_when_the_graph_does_not_end_in_softmax(labels, tmp_path):
    model = write_tfjs_model(tmp_path / "model", last_op="Identity")
    imp = import_ok(model.json, tmp_path / "repo", "logits", "--task", "classify", "--labels", labels, cwd=tmp_path)
    assert imp.manifest["output"] == {"logits": "probs", "softmax": True}
    check_tfjs_import(model, imp, tmp_path)


# -- validation samples from --samples -------------------------------------------------

def test_samples_folder_images_are_resized_and_normalised_into_the_golden_input(keras_files, labels, tmp_path):
    from PIL import Image
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB").save(samples / "a_wide.png")
    Image.fromarray(rng.integers(0, 256, (21, 9), dtype=np.uint8), "L").save(samples / "b_tall_gray.png")
    (samples / "notes.txt").write_text("not an image")
    scale, mean, std = 0.00392156862745098, [0.5, 0.4, 0.3], [0.25, 0.5, 0.2]
    imp = import_ok(keras_files[".keras"], tmp_path / "repo", "k", "--samples", samples, "--scale", str(scale),
                    "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)), "--labels", labels,
                    cwd=tmp_path)
    [(key, x)] = imp.inputs.items()
    assert x.shape == (2, SIZE, SIZE, CHANNELS) and x.dtype == np.float32
    want = []
    for name in ("a_wide.png", "b_tall_gray.png"):  # sorted by name
        img = Image.open(samples / name).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        px = np.asarray(img, np.uint8).astype(np.float32) * np.float32(scale)
        want.append((px - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    np.testing.assert_allclose(x, np.stack(want), rtol=0, atol=1e-6)
    assert imp.record["samples"] == ["a_wide.png", "b_tall_gray.png"]
    [(out_key, y)] = imp.outputs.items()
    assert y.shape[0] == 2
    assert_close({out_key: y}, {out_key: keras_outputs(keras_files[".keras"], x)})
    go_check(imp)
