"""Tests of edgeinfer-import (tools/import/edgeinfer_import), through its real CLI.

    .venv/bin/python -m pytest -q tools/import        # from the repository root (or anywhere)

Needs `make build` (bin/tfmodels, bin/edgeinfer-import) and the TF.js reference
runtime (`cd tools/import/tfjsref && npm ci --no-audit --no-fund`). Every model
is tiny and written by the tests themselves into pytest's temporary folders:
nothing is downloaded.

Each import path is checked three ways: (a) the version folder holds what the
repository expects, (b) `bin/tfmodels check` loads it through the Go binding
and reproduces the golden outputs within 1e-5, and (c) the golden outputs are
the source's own outputs, computed here independently of the importer (Keras,
a TF1 session on the GraphDef, the SavedModel's signature, TF.js in Node).

Speed: each CLI run starts TensorFlow (about 5 s), and there are some thirty of
them. So every CLI run of the selected tests is a *job*, registered with
@job(<the tests that read it>) next to those tests, and started when the session
starts, two at a time (the machine has two cores); a test waits for its job's
result and makes its assertions in the main thread. A job only writes its
source files and runs the CLI.
"""
from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Callable

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
WORKERS = 2

# Keras 3 on numpy 2 warns about __array__(copy=...) in model(x): not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

# How far the imported model (through the Go binding) and the golden outputs
# may be from the source's own runtime.
TOL = 1e-5
SIZE, CHANNELS, CLASSES = 8, 3, 5


# -- running the tools ----------------------------------------------------------

def cli(*args, cwd) -> subprocess.CompletedProcess:
    """bin/edgeinfer-import, run from cwd (not the repository root)."""
    return subprocess.run([str(CLI), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@dataclasses.dataclass
class Run:
    """One CLI run of a job: what it printed, and where it imported to."""
    proc: subprocess.CompletedProcess
    repo: Path
    name: str
    source: Path
    extra: dict = dataclasses.field(default_factory=dict)


def run_import(d: Path, source: Path, *flags, name: str = "m") -> Run:
    """Imports source into d/repo/<name>, run from d."""
    return Run(cli("--repo", d / "repo", "--name", name, source, *flags, cwd=d), d / "repo", name, source)


@dataclasses.dataclass
class Imported:
    dir: Path
    inputs: dict  # golden/input_<key>.npy
    outputs: dict  # golden/output_<key>.npy
    manifest: dict  # edgeinfer.toml
    record: dict  # import.json


def imported(run: Run) -> Imported:
    """The import succeeded, and (a): the version folder holds what the repository expects."""
    r = run.proc
    assert r.returncode == 0, f"edgeinfer-import failed:\n{r.stderr[-4000:]}"
    d = run.repo / run.name / "1"
    assert r.stdout.strip().splitlines()[-1] == str(d)
    # Nothing but the version itself: the staging folder was renamed into place.
    assert sorted(os.listdir(run.repo / run.name)) == ["1"]
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
        d = float(delta)
        # Δ is printed with one significant digit (%.1g): the true value is below d + half a unit of it.
        deltas[key] = d + 0.5 * 10 ** math.floor(math.log10(d)) if d > 0 else 0.0
    assert set(deltas) == set(imp.outputs)
    assert all(d <= TOL for d in deltas.values()), f"the Go binding differs from the source: {lines[0]}"
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


def refused(run: Run, *says: str) -> str:
    """The import was refused: exit 1, one `edgeinfer-import: ...` line naming
    what is wrong (each of says), no traceback; and nothing was left behind:
    <repo>/<name> does not exist."""
    r = run.proc
    assert r.returncode == 1, f"exit {r.returncode}; stdout {r.stdout!r}; stderr:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stdout.strip() == ""
    msgs = [l for l in r.stderr.splitlines() if l.startswith("edgeinfer-import: ")]
    assert len(msgs) == 1, r.stderr[-3000:]
    assert r.stderr.rstrip().endswith(msgs[0]), "the message is the last thing written"
    for part in says:
        assert part in msgs[0], f"{part!r} not in {msgs[0]!r}"
    assert_nothing_left(run.repo, run.name)
    return msgs[0]


def assert_nothing_left(repo: Path, name: str) -> None:
    assert not (repo / name).exists(), f"{repo / name} left behind: {os.listdir(repo / name)}"


def tree(d: Path) -> dict[str, str]:
    """Every file below d -> its sha256."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


# -- the sources made with TensorFlow (in the main thread) -------------------------

@dataclasses.dataclass
class Sources:
    labels: Path  # CLASSES class names (edgeinfer requires labels for task classify)
    keras: dict  # ".keras"/".h5" -> the same tiny Keras model saved both ways
    pb: Path  # a frozen GraphDef
    gd: object  # its GraphDef
    saved_model: Path


def make_keras_files(d: Path) -> dict[str, Path]:
    """Conv2D + GlobalAveragePooling + Dense(softmax), NHWC [None,8,8,3]."""
    import keras
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


def make_frozen_graph(path: Path):
    """x [N,8,8,3] -> conv+relu -> feat (mean) -> logits -> probs (softmax), frozen."""
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
    assert {"x", "feat", "logits", "probs"} <= {n.name for n in gd.node}
    path.write_bytes(gd.SerializeToString())
    return gd


def make_saved_model(d: Path) -> Path:
    """A TF2 SavedModel of a tf.Module with variables: serving_default ->
    {probs, logits, features}; classify -> {scores}; input key "image"."""
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
    tf.saved_model.save(m, str(d), signatures={"serving_default": m.serve.get_concrete_function(),
                                               "classify": m.classify.get_concrete_function()})
    return d


def make_sources(d: Path) -> Sources:
    labels = d / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    pb = d / "tiny_frozen.pb"
    gd = make_frozen_graph(pb)
    return Sources(labels, make_keras_files(d), pb, gd, make_saved_model(d / "tiny_saved_model"))


# -- jobs: the CLI runs, started two at a time when the session starts ----------------

@dataclasses.dataclass
class Job:
    fn: Callable  # (folder, sources or None) -> Run
    tests: set  # the tests that read its result: it runs only when one of them is selected
    sources: bool  # whether it needs the TensorFlow-made Sources


JOBS: dict[str, Job] = {}


def job(*tests: str, sources: bool = False, name: str | None = None):
    def register(fn):
        JOBS[name or fn.__name__] = Job(fn, set(tests), sources)
        return fn
    return register


class Runs:
    def __init__(self, futures: dict, sources: Sources):
        self.futures = futures
        self.sources = sources

    def __call__(self, name: str) -> Run:
        assert name in self.futures, f"job {name!r} was not started: list the test in its @job(...)"
        return self.futures[name].result()


@pytest.fixture(scope="session")
def runs(request, tmp_path_factory):
    missing = [str(p) for p in (CLI, TFMODELS, HERE / "tfjsref" / "node_modules") if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make build` and `cd tools/import/tfjsref && npm ci --no-audit --no-fund`",
                    pytrace=False)
    unknown = {t for j in JOBS.values() for t in j.tests if not callable(globals().get(t))}
    assert not unknown, f"@job names tests that do not exist: {unknown}"
    selected = {getattr(item, "originalname", item.name) for item in request.session.items}
    wanted = {n: j for n, j in JOBS.items() if j.tests & selected}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
    futures = {}
    try:
        # The jobs that need no TensorFlow-made source start while the main thread makes those.
        for n, j in wanted.items():
            if not j.sources:
                futures[n] = pool.submit(j.fn, tmp_path_factory.mktemp(n), None)
        needed = any(j.sources for j in wanted.values())
        sources = make_sources(tmp_path_factory.mktemp("sources")) if needed else None
        for n, j in wanted.items():
            if j.sources:
                futures[n] = pool.submit(j.fn, tmp_path_factory.mktemp(n), sources)
        yield Runs(futures, sources)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def sources(runs) -> Sources:
    assert runs.sources is not None, "no selected job needs the TensorFlow-made sources"
    return runs.sources


# -- Keras -------------------------------------------------------------------------

def keras_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import keras
    model = keras.saving.load_model(path, compile=False)
    return np.asarray(model(x, training=False))


for _suffix in (".keras", ".h5"):
    job("test_keras_file_imports_and_reproduces_keras_through_go_binding", sources=True, name=f"keras{_suffix}")(
        lambda d, src, suffix=_suffix: run_import(d, src.keras[suffix], "--labels", src.labels))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_imports_and_reproduces_keras_through_go_binding(suffix, runs, sources):
    imp = imported(runs(f"keras{suffix}"))
    go_check(imp)
    [(key, x)] = imp.inputs.items()
    assert x.shape == (2, SIZE, SIZE, CHANNELS)
    [(out_key, y)] = imp.outputs.items()
    assert y.shape == (2, CLASSES)
    assert_close({out_key: y}, {out_key: keras_outputs(sources.keras[suffix], x)})
    assert imp.manifest["source"]["format"] == "keras"
    # Dense(softmax) ends the graph in Softmax: the plugin must not apply another.
    assert imp.manifest["output"] == {"logits": out_key, "softmax": False}
    assert "batch" not in imp.manifest["input"]


# -- frozen GraphDef ----------------------------------------------------------------

@job("test_frozen_graphdef_imports_with_named_input_and_output_and_reproduces_tf1_session", sources=True)
def graphdef_probs(d, src):
    return run_import(d, src.pb, "--input", "x=x", "--output", "probs=probs", "--labels", src.labels)


def test_frozen_graphdef_imports_with_named_input_and_output_and_reproduces_tf1_session(runs, sources):
    imp = imported(runs("graphdef_probs"))
    go_check(imp)
    assert list(imp.inputs) == ["x"] and list(imp.outputs) == ["probs"]
    want = tf1_run(sources.gd, {"x:0": imp.inputs["x"]}, {"probs": "probs:0"})
    assert_close(imp.outputs, want)
    assert imp.manifest["source"]["format"] == "graphdef"
    assert imp.manifest["output"] == {"logits": "probs", "softmax": False}


@job("test_frozen_graphdef_inner_tensor_can_be_chosen_as_output", sources=True)
def graphdef_inner(d, src):
    return run_import(d, src.pb, "--input", "x=x", "--output", "scores=logits:0", "--labels", src.labels)


def test_frozen_graphdef_inner_tensor_can_be_chosen_as_output(runs, sources):
    imp = imported(runs("graphdef_inner"))
    go_check(imp)
    assert list(imp.outputs) == ["scores"]
    assert imp.outputs["scores"].shape == (2, CLASSES)
    want = tf1_run(sources.gd, {"x:0": imp.inputs["x"]}, {"scores": "logits:0"})
    assert_close(imp.outputs, want)
    # Not the sink: these are logits, not probabilities, so the plugin applies the softmax.
    assert not np.allclose(imp.outputs["scores"].sum(axis=1), 1.0)
    assert imp.manifest["output"] == {"logits": "scores", "softmax": True}


# -- SavedModel ----------------------------------------------------------------------

def signature_outputs(path: Path, signature: str, x: np.ndarray) -> dict[str, np.ndarray]:
    fn = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in fn(image=tf.constant(x)).items()}


@job("test_savedmodel_named_signature_imports_and_reproduces_the_signature", sources=True)
def savedmodel_signature(d, src):
    return run_import(d, src.saved_model, "--signature", "classify", "--labels", src.labels)


def test_savedmodel_named_signature_imports_and_reproduces_the_signature(runs, sources):
    imp = imported(runs("savedmodel_signature"))
    go_check(imp)
    assert list(imp.inputs) == ["image"] and list(imp.outputs) == ["scores"]
    assert_close(imp.outputs, signature_outputs(sources.saved_model, "classify", imp.inputs["image"]))
    assert imp.manifest["source"]["format"] == "savedmodel"
    assert imp.manifest["output"] == {"logits": "scores", "softmax": False}


@job("test_savedmodel_outputs_can_be_chosen_and_renamed", sources=True)
def savedmodel_rename(d, src):
    return run_import(d, src.saved_model, "--output", "class_probs=probs", "--output", "feats=features",
                      "--set", "output.logits=class_probs", "--set", "output.softmax=false", "--labels", src.labels)


def test_savedmodel_outputs_can_be_chosen_and_renamed(runs, sources):
    imp = imported(runs("savedmodel_rename"))
    go_check(imp)
    # Exactly the chosen outputs, under their new keys; logits is left out.
    assert sorted(imp.outputs) == ["class_probs", "feats"]
    want = signature_outputs(sources.saved_model, "serving_default", imp.inputs["image"])
    assert_close(imp.outputs, {"class_probs": want["probs"], "feats": want["features"]})
    with open(imp.dir / "golden" / "signatures.json") as f:
        sigs = json.dumps(json.load(f))
    assert "class_probs" in sigs and "feats" in sigs and "logits" not in sigs
    assert imp.manifest["output"] == {"logits": "class_probs", "softmax": False}


# -- TF.js graph models ----------------------------------------------------------------

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
    # No TArgs: the converter leaves it out, and the pinned TensorFlow rejects the node without it.
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
        "fc/weights": rng.normal(0, 0.4, (4, CLASSES)).astype(np.float32),
        "fc/bias": rng.normal(-0.5, 1.0, (CLASSES,)).astype(np.float32),
        "prelu/alpha": rng.uniform(0.05, 0.5, (CLASSES,)).astype(np.float32),
    }


@dataclasses.dataclass
class TfjsModel:
    json: Path
    shards: list[Path]
    weights: dict[str, np.ndarray]


def write_tfjs_model(folder: Path, *, batch: int = -1, quantize: dict[str, str] | None = None,
                     last_op: str = "Softmax") -> TfjsModel:
    """A TF.js graph model as the converter writes it, with the fused ops the
    pinned TensorFlow rejects:

        x [batch,8,8,3] -> _FusedConv2D(BiasAdd,Relu) -> FusedDepthwiseConv2dNative(BiasAdd,Relu6)
          -> Mean -> _FusedMatMul(BiasAdd) -> Prelu -> probs (Softmax, or last_op)

    The weights follow one another, little-endian, in two shard files, the cut
    falling inside a weight. quantize: weight name -> "uint8" (scale/min) or
    "float16"."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = tfjs_weights()
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
    cut = len(buf) // 2 + 1  # odd: inside a weight, not even on a value boundary
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


def manifest_weights(model: TfjsModel) -> list[dict]:
    return json.loads(model.json.read_text())["weightsManifest"][0]["weights"]


def edit_model_json(model: TfjsModel, edit: Callable[[dict], None]) -> None:
    j = json.loads(model.json.read_text())
    edit(j)
    model.json.write_text(json.dumps(j, indent=1))


QUANTIZED = {"conv/weights": "uint8", "dw/weights": "float16", "fc/weights": "uint8", "dw/bias": "uint8",
             "prelu/alpha": "float16"}


def check_tfjs_import(run: Run, tmp_path: Path) -> tuple[Imported, dict]:
    """(a), (b) and (c) for a TF.js import; returns it and TF.js's own output."""
    imp = imported(run)
    go_check(imp)
    assert list(imp.inputs) == ["x"] and list(imp.outputs) == ["probs"]
    want = tfjs_run(run.source, {"x": imp.inputs["x"]}, {"probs": "probs"}, tmp_path / "tfjs-out")
    assert_close(imp.outputs, want)
    return imp, want


def saved_graph(imp: Imported):
    from tensorflow.core.protobuf import saved_model_pb2
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((imp.dir / "saved_model.pb").read_bytes())
    [mg] = sm.meta_graphs
    return mg.graph_def


def assert_unfused(imp: Imported) -> None:
    """The version holds the plain ops; none of the converter's fused ops is left."""
    gd = saved_graph(imp)
    ops = {n.op for n in gd.node} | {n.op for f in gd.library.function for n in f.node_def}
    assert not ops & {"_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul", "Prelu"}, ops
    assert {"Conv2D", "DepthwiseConv2dNative", "MatMul", "BiasAdd", "Relu", "Relu6", "Softmax"} <= ops, ops


@job("test_tfjs_graph_model_fused_ops_are_unfused_and_match_tfjs", "test_tfjs_quantized_weights_are_dequantized_and_match_tfjs",
     "test_manifest_scaffold_for_a_dynamic_batch_model_has_no_batch_and_default_tolerance")
def tfjs_float(d, _):
    """The float32 TF.js model, with a --checksums file that matches."""
    model = write_tfjs_model(d / "model")
    labels = d / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    sums = d / "model" / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256(s.read_bytes()).hexdigest()}  {s.name}\n" for s in model.shards))
    return run_import(d, model.json, "--checksums", sums, "--labels", labels, name="tfjs")


def test_tfjs_graph_model_fused_ops_are_unfused_and_match_tfjs(runs, tmp_path):
    run = runs("tfjs_float")
    shards = sorted(run.source.parent.glob("group1-shard*.bin"))
    assert len(shards) == 2 and all(s.stat().st_size > 0 for s in shards)
    imp, _ = check_tfjs_import(run, tmp_path)
    assert_unfused(imp)
    assert imp.manifest["source"]["format"] == "tfjs"


@job("test_tfjs_quantized_weights_are_dequantized_and_match_tfjs", "test_tfjs_uint8_dequantization_is_bit_identical_to_tfjs")
def tfjs_quantized(d, _):
    model = write_tfjs_model(d / "model", quantize=QUANTIZED)
    labels = d / "labels.txt"
    labels.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    return run_import(d, model.json, "--labels", labels, name="q")


def test_tfjs_quantized_weights_are_dequantized_and_match_tfjs(runs, tmp_path):
    run = runs("tfjs_quantized")
    specs = json.loads(run.source.read_text())["weightsManifest"][0]["weights"]
    assert {w["quantization"]["dtype"] for w in specs if "quantization" in w} == {"uint8", "float16"}
    imp, want = check_tfjs_import(run, tmp_path)
    assert_unfused(imp)
    # The same weights stored as float32 give visibly different outputs for the
    # same input: the quantized values, not the originals, were served.
    float_imp = imported(runs("tfjs_float"))
    np.testing.assert_array_equal(imp.inputs["x"], float_imp.inputs["x"])
    assert np.max(np.abs(want["probs"] - float_imp.outputs["probs"])) > 10 * TOL


def test_tfjs_uint8_dequantization_is_bit_identical_to_tfjs(runs):
    """TF.js dequantizes uint8 weights as `q * scale + min` in double precision
    (JavaScript numbers; tfjs-core io_utils decodeWeights) and rounds once to
    float32; the imported weights must be those very float32 values."""
    run = runs("tfjs_quantized")
    imp = imported(run)
    specs = json.loads(run.source.read_text())["weightsManifest"][0]["weights"]
    buf = b"".join((run.source.parent / p).read_bytes()
                   for p in json.loads(run.source.read_text())["weightsManifest"][0]["paths"])
    # The imported weights: the big ones are variables, the small ones stay Const nodes.
    ckpt = tf.train.load_checkpoint(str(imp.dir / "variables" / "variables"))
    stored = {k.removeprefix("edgeinfer_weights/"): ckpt.get_tensor(k) for k in ckpt.get_variable_to_shape_map()}
    stored.update({n.name: tf.make_ndarray(n.attr["value"].tensor) for n in saved_graph(imp).node if n.op == "Const"})
    off, checked = 0, []
    for w in specs:
        count = int(np.prod(w["shape"]))
        q = w.get("quantization", {}).get("dtype")
        size = count * {"uint8": 1, "float16": 2}.get(q, 4)
        if q == "uint8":
            raw = np.frombuffer(buf, np.uint8, count, off)
            tfjs = (raw.astype(np.float64) * w["quantization"]["scale"] + w["quantization"]["min"]).astype(np.float32)
            np.testing.assert_array_equal(stored[w["name"]].ravel(), tfjs, err_msg=w["name"])
            checked.append(w["name"])
        off += size
    assert sorted(checked) == ["conv/weights", "dw/bias", "fc/weights"]


# -- bad inputs: exit 1, one clear line, nothing left behind ----------------------------

@job("test_missing_weight_shard_is_refused_naming_the_shard")
def missing_shard(d, _):
    model = write_tfjs_model(d / "model")
    model.shards[1].unlink()
    return run_import(d, model.json)


def test_missing_weight_shard_is_refused_naming_the_shard(runs):
    run = runs("missing_shard")
    refused(run, str(run.source), "group1-shard2of2.bin", "No such file")


@job("test_truncated_weight_shard_is_refused_naming_the_shards")
def truncated_shard(d, _):
    model = write_tfjs_model(d / "model")
    model.shards[1].write_bytes(model.shards[1].read_bytes()[:-10])
    return run_import(d, model.json)


def test_truncated_weight_shard_is_refused_naming_the_shards(runs):
    run = runs("truncated_shard")
    refused(run, str(run.source), "group1-shard2of2.bin", "truncated")


@job("test_checksum_mismatch_is_refused_naming_the_shard_and_the_pin")
def checksum_mismatch(d, _):
    model = write_tfjs_model(d / "model")
    sums = d / "model" / "SHA256SUMS"
    good = hashlib.sha256(model.shards[0].read_bytes()).hexdigest()
    sums.write_text(f"{good}  {model.shards[0].name}\n{'0' * 64}  {model.shards[1].name}\n")
    run = run_import(d, model.json, "--checksums", sums)
    run.extra.update(sums=sums, shard=model.shards[1])
    return run


def test_checksum_mismatch_is_refused_naming_the_shard_and_the_pin(runs):
    run = runs("checksum_mismatch")
    refused(run, str(run.extra["shard"]), "sha256", f"{run.extra['sums']}:2", "not the one pinned")


@job("test_unknown_op_is_refused_naming_op_and_node")
def unknown_op(d, _):
    return run_import(d, write_tfjs_model(d / "model", last_op="NoSuchOp").json)


def test_unknown_op_is_refused_naming_op_and_node(runs):
    run = runs("unknown_op")
    refused(run, str(run.source), "does not know", "NoSuchOp", "'probs'")


@job("test_unknown_quantization_dtype_is_refused_naming_the_weight")
def unknown_quantization(d, _):
    model = write_tfjs_model(d / "model")

    def int8(j):
        j["weightsManifest"][0]["weights"][0]["quantization"] = {
            "dtype": "int8", "scale": 0.01, "min": -1.0, "original_dtype": "float32"}
    edit_model_json(model, int8)
    return run_import(d, model.json)


def test_unknown_quantization_dtype_is_refused_naming_the_weight(runs):
    run = runs("unknown_quantization")
    refused(run, str(run.source), "'conv/weights'", "'int8'")


@job("test_const_node_without_weights_is_refused_naming_it")
def const_without_weights(d, _):
    """fc/bias is a Const of the graph that the manifest (and the shards) leave out."""
    model = write_tfjs_model(d / "model")
    buf = b"".join(s.read_bytes() for s in model.shards)
    specs, kept, off = [], b"", 0
    for w in manifest_weights(model):
        size = int(np.prod(w["shape"])) * 4
        if w["name"] != "fc/bias":
            specs.append(w)
            kept += buf[off:off + size]
        off += size
    model.shards[0].write_bytes(kept[:len(kept) // 2])
    model.shards[1].write_bytes(kept[len(kept) // 2:])
    edit_model_json(model, lambda j: j["weightsManifest"][0].update(weights=specs))
    return run_import(d, model.json)


def test_const_node_without_weights_is_refused_naming_it(runs):
    run = runs("const_without_weights")
    refused(run, str(run.source), "fc/bias")


@job("test_tfjs_layers_model_is_refused_as_not_a_graph_model")
def layers_model(d, _):
    f = d / "layers" / "model.json"
    f.parent.mkdir()
    f.write_text(json.dumps({
        "format": "layers-model", "generatedBy": "keras v2.15.0", "convertedBy": "TensorFlow.js Converter v4.22.0",
        "modelTopology": {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
            {"class_name": "Dense", "config": {"units": 2, "batch_input_shape": [None, 4]}}]},
            "keras_version": "2.15.0", "backend": "tensorflow"},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": [
            {"name": "dense/kernel", "shape": [4, 2], "dtype": "float32"}]}]}))
    return run_import(d, f)


def test_tfjs_layers_model_is_refused_as_not_a_graph_model(runs):
    run = runs("layers_model")
    refused(run, str(run.source), "layers model", "not a graph model")


NOT_GRAPH_MODELS = {"list": ([1, 2, 3], "JSON list"),
                    "object": ({"weights": [], "name": "not a model"}, "modelTopology.node")}
for _kind, (_content, _) in NOT_GRAPH_MODELS.items():
    def _write_json(d, _, content=_content):
        f = d / "thing.json"
        f.write_text(json.dumps(content))
        return run_import(d, f)
    job("test_json_that_is_not_a_graph_model_is_refused", name=f"json_{_kind}")(_write_json)


@pytest.mark.parametrize("kind", list(NOT_GRAPH_MODELS))
def test_json_that_is_not_a_graph_model_is_refused(kind, runs):
    run = runs(f"json_{kind}")
    refused(run, str(run.source), "not a TF.js graph model", NOT_GRAPH_MODELS[kind][1])


@job("test_unknown_input_tensor_is_refused_naming_it_and_the_placeholders")
def unknown_input(d, _):
    return run_import(d, write_tfjs_model(d / "model").json, "--input", "image=no_such_input")


def test_unknown_input_tensor_is_refused_naming_it_and_the_placeholders(runs):
    run = runs("unknown_input")
    refused(run, str(run.source), "image=no_such_input", "'no_such_input'", "placeholders are x")


UNKNOWN_OUTPUTS = {"no-node": "no_such_node", "no-such-index": "logits:7"}
for _id, _tensor in UNKNOWN_OUTPUTS.items():
    job("test_unknown_output_tensor_is_refused_naming_it", sources=True, name=f"unknown_output_{_id}")(
        lambda d, src, tensor=_tensor: run_import(d, src.pb, "--input", "x=x", "--output", f"out={tensor}"))


@pytest.mark.parametrize("which", list(UNKNOWN_OUTPUTS))
def test_unknown_output_tensor_is_refused_naming_it(which, runs):
    run = runs(f"unknown_output_{which}")
    refused(run, str(run.source), f"out={UNKNOWN_OUTPUTS[which]}")


@job("test_savedmodel_unknown_output_is_refused_listing_the_outputs", sources=True)
def savedmodel_unknown_output(d, src):
    return run_import(d, src.saved_model, "--output", "p=no_such_output")


def test_savedmodel_unknown_output_is_refused_listing_the_outputs(runs):
    run = runs("savedmodel_unknown_output")
    refused(run, str(run.source), "no_such_output", "features, logits, probs")


@job("test_pb_that_is_not_a_graphdef_is_refused")
def not_graphdef(d, _):
    f = d / "notes.pb"
    f.write_bytes(b"\x93NUMPY this is not a GraphDef \xff\xfe\x00\x01" * 10)
    return run_import(d, f)


def test_pb_that_is_not_a_graphdef_is_refused(runs):
    run = runs("not_graphdef")
    refused(run, str(run.source), "not a binary GraphDef")


@job("test_savedmodel_unknown_signature_is_refused_listing_the_signatures", sources=True)
def unknown_signature(d, src):
    return run_import(d, src.saved_model, "--signature", "no_such_signature", "--labels", src.labels)


def test_savedmodel_unknown_signature_is_refused_listing_the_signatures(runs):
    run = runs("unknown_signature")
    refused(run, str(run.source), "'no_such_signature'", "classify", "serving_default")


@job("test_existing_version_is_refused_and_kept_intact", sources=True)
def version_twice(d, src):
    first = run_import(d, src.keras[".keras"], "--version", "1", "--labels", src.labels, name="k")
    before = tree(first.repo / "k" / "1") if first.proc.returncode == 0 else None
    second = run_import(d, src.keras[".h5"], "--version", "1", "--labels", src.labels, name="k")
    second.extra.update(first=first, before=before)
    return second


def test_existing_version_is_refused_and_kept_intact(runs):
    run = runs("version_twice")
    imp = imported(run.extra["first"])
    r = run.proc
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith("edgeinfer-import: ") and str(imp.dir) in msg and "exists" in msg and "--version" in msg, msg
    assert sorted(os.listdir(run.repo / "k")) == ["1"]
    assert tree(imp.dir) == run.extra["before"]
    go_check(imp)


@job("test_failure_after_staging_removes_the_staging_folder_and_keeps_other_versions", sources=True)
def failure_after_staging(d, src):
    """The Go check (the last step, with everything written) fails on purpose."""
    (d / "repo" / "k" / "1").mkdir(parents=True)
    (d / "repo" / "k" / "1" / "marker").write_text("an existing version")
    broken = d / "tfmodels-broken"
    broken.write_text("#!/bin/sh\necho 'cannot load: broken on purpose' >&2\nexit 3\n")
    broken.chmod(0o755)
    existing = run_import(d, src.keras[".keras"], "--tfmodels", broken, "--labels", src.labels, name="k")
    existing.extra["fresh"] = run_import(d, src.keras[".keras"], "--tfmodels", broken, "--labels", src.labels, name="fresh")
    return existing


def test_failure_after_staging_removes_the_staging_folder_and_keeps_other_versions(runs):
    run = runs("failure_after_staging")
    # Where the model folder existed: it keeps only the versions it had, no .2.import.
    r = run.proc
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith("edgeinfer-import: the C API cannot serve the import") and "broken on purpose" in msg, msg
    assert sorted(os.listdir(run.repo / "k")) == ["1"]
    assert os.listdir(run.repo / "k" / "1") == ["marker"]
    # Where it did not exist, it is gone again.
    refused(run.extra["fresh"], "the C API cannot serve the import", "broken on purpose")


# -- the edgeinfer.toml scaffold --------------------------------------------------------

@job("test_manifest_scaffold_from_flags_for_a_fixed_batch_tfjs_model")
def manifest_fixed(d, _):
    model = write_tfjs_model(d / "model", batch=1)
    labels = d / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\nfish\nfrog\n")  # a blank line is skipped
    return run_import(d, model.json, "--task", "classify", "--labels", labels, "--scale", "0.00392156862745098",
                      "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--tolerance", "3e-5", name="fixed")


def test_manifest_scaffold_from_flags_for_a_fixed_batch_tfjs_model(runs, tmp_path):
    imp, _ = check_tfjs_import(runs("manifest_fixed"), tmp_path)
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


def test_manifest_scaffold_for_a_dynamic_batch_model_has_no_batch_and_default_tolerance(runs):
    imp = imported(runs("tfjs_float"))
    man = imp.manifest
    assert "batch" not in man["input"]
    assert man["labels"] == [f"class{i}" for i in range(CLASSES)]
    assert man["task"] == "classify"
    assert (man["input"]["height"], man["input"]["width"], man["input"]["channels"]) == (SIZE, SIZE, CHANNELS)
    assert man["input"]["scale"] == pytest.approx(1 / 255)
    assert man["input"]["mean"] == [0.0, 0.0, 0.0] and man["input"]["std"] == [1.0, 1.0, 1.0]
    assert man["output"] == {"logits": "probs", "softmax": False}
    # The default tolerance: ten times how far TF.js's cpu and wasm backends differ, at least 1e-5.
    spread = imp.record["runtimes_differ_by"]
    assert spread is not None
    assert man["validation"]["tolerance"] == pytest.approx(max(1e-5, 10 * spread))
    assert man["source"]["format"] == "tfjs"


# -- validation samples from --samples --------------------------------------------------

SAMPLES_SCALE, SAMPLES_MEAN, SAMPLES_STD = 0.00392156862745098, [0.5, 0.4, 0.3], [0.25, 0.5, 0.2]


@job("test_samples_folder_images_are_resized_and_normalised_into_the_golden_input", sources=True)
def samples_import(d, src):
    """Two PNGs of other sizes than the 8x8 input (one of them gray), and a non-image."""
    from PIL import Image
    samples = d / "samples"
    samples.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB").save(samples / "a_wide.png")
    Image.fromarray(rng.integers(0, 256, (21, 9), dtype=np.uint8), "L").save(samples / "b_tall_gray.png")
    (samples / "notes.txt").write_text("not an image")
    run = run_import(d, src.keras[".keras"], "--samples", samples, "--scale", str(SAMPLES_SCALE),
                     "--mean", ",".join(map(str, SAMPLES_MEAN)), "--std", ",".join(map(str, SAMPLES_STD)),
                     "--labels", src.labels, name="k")
    run.extra["samples"] = samples
    return run


def test_samples_folder_images_are_resized_and_normalised_into_the_golden_input(runs, sources):
    from PIL import Image
    run = runs("samples_import")
    imp = imported(run)
    [(key, x)] = imp.inputs.items()
    assert x.shape == (2, SIZE, SIZE, CHANNELS) and x.dtype == np.float32
    want = []
    for name in ("a_wide.png", "b_tall_gray.png"):  # sorted by name
        img = Image.open(run.extra["samples"] / name).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        px = np.asarray(img, np.uint8).astype(np.float32) * np.float32(SAMPLES_SCALE)
        want.append((px - np.asarray(SAMPLES_MEAN, np.float32)) / np.asarray(SAMPLES_STD, np.float32))
    np.testing.assert_allclose(x, np.stack(want), rtol=0, atol=1e-6)
    assert imp.record["samples"] == ["a_wide.png", "b_tall_gray.png"]
    [(out_key, y)] = imp.outputs.items()
    assert y.shape == (2, CLASSES)
    assert_close({out_key: y}, {out_key: keras_outputs(sources.keras[".keras"], x)})
    go_check(imp)
