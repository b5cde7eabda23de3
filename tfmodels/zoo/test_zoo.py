"""Tests of the classic architectures of the zoo (LeNet-5 .. video LSTM).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_zoo.py

Full variants are only built (parameter counts, structure); behaviour is checked on the tiny
variants. About a minute on two cores; the big full models are built one at a time and freed.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tomllib  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import common, export  # noqa: E402
from tfmodels.zoo import alexnet, facenet, fcn, googlenet, lenet5, resnet50, siamese, unet, vgg16, video_lstm  # noqa: E402

MY_MODELS = [
    "lenet5", "alexnet", "vgg16", "vgg16_fcn", "googlenet", "resnet50", "facenet", "siamese",
    "fcn32s", "fcn16s", "fcn8s", "unet", "video_lstm",
]


def within(n, target, tol=0.05):
    return abs(n - target) <= tol * target


@pytest.fixture(autouse=True)
def _free_models():
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def lenet():
    """LeNet-5 is trained at build time (~10 s): build it once for every test that needs it."""
    return lenet5.build("full")


# ---------------------------------------------------------------- parameter counts (full variants)


def test_lenet5_params(lenet):
    n = lenet.keras_model.count_params()
    assert n == 60850  # C3 with the paper's sparse connection table
    assert within(n, 60_000)


@pytest.mark.parametrize(
    "build,target",
    [
        (alexnet.build, 61e6),
        (vgg16.build_vgg16, 138e6),
        (googlenet.build, 6.8e6),
        (resnet50.build, 25.6e6),
    ],
    ids=["alexnet", "vgg16", "googlenet", "resnet50"],
)
def test_full_param_counts(build, target):
    m = build("full")
    n = m.keras_model.count_params()
    assert within(n, target), f"{m.name}: {n:,} params, want {target:,.0f} +-5%"


def test_vgg16_fcn_same_params_as_vgg16():
    # The FC layers become convolutions with the same weights: same count at full size.
    n = vgg16.vgg16_fcn(div=16, classes=10).count_params()
    keras.backend.clear_session()
    assert n == vgg16.vgg16(size=224, div=16, classes=10).count_params()


def test_googlenet_has_nine_inception_modules_with_four_branches():
    model = googlenet.build("full").keras_model
    concats = [l for l in model.layers if isinstance(l, keras.layers.Concatenate)]
    assert [l.name for l in concats] == [f"inception_{m}_concat" for m in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    names = {l.name for l in model.layers}
    for c in concats:
        assert len(c.input) == 4, c.name
        p = c.name[: -len("_concat")]
        for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool", "pool_proj"):
            assert f"{p}_{branch}" in names
    assert not any("aux" in n or n.startswith("loss1") or n.startswith("loss2") for n in names)


def test_resnet50_has_sixteen_bottleneck_blocks():
    model = resnet50.build("full").keras_model
    adds = [l.name for l in model.layers if isinstance(l, keras.layers.Add)]
    assert len(adds) == 16
    per_stage = {s: sum(1 for a in adds if a.startswith(f"conv{s}_")) for s in (2, 3, 4, 5)}
    assert per_stage == {2: 3, 3: 4, 4: 6, 5: 3}
    # projection shortcuts exactly on the first block of each stage
    proj = sorted(l.name for l in model.layers if l.name.endswith("_0_conv"))
    assert proj == [f"conv{s}_block1_0_conv" for s in (2, 3, 4, 5)]
    # bottleneck: 1x1 -> 3x3 -> 1x1 with x4 expansion
    get = {l.name: l for l in model.layers}
    b = "conv4_block2"
    assert get[f"{b}_1_conv"].kernel_size == (1, 1) and get[f"{b}_2_conv"].kernel_size == (3, 3)
    assert get[f"{b}_3_conv"].filters == 4 * get[f"{b}_1_conv"].filters == 1024
    assert model.output.shape[-1] == 1000 and model.input.shape[1:] == (224, 224, 3)


# ---------------------------------------------------------------- losses


def test_triplet_loss_matches_hand_computed_values():
    a = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]], np.float32)
    p = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    n = np.array([[0.0, 2.0], [0.5, 0.0], [1.0, 1.1]], np.float32)
    # per triplet: max(0, |a-p|^2 - |a-n|^2 + 0.2):  1-4+.2 -> 0;  1-.25+.2 = .95;  0-.01+.2 = .19
    assert float(facenet.triplet_loss(a, p, n)) == pytest.approx(0.95 + 0.19, abs=1e-6)
    assert float(facenet.triplet_loss(a, p, n, margin=0.0)) == pytest.approx(0.75, abs=1e-6)


def test_triplet_loss_matches_numpy_on_random_embeddings():
    rng = np.random.default_rng(3)
    a, p, n = (rng.normal(size=(16, 128)).astype(np.float32) for _ in range(3))
    a, p, n = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, p, n))
    want = np.maximum(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.2, 0).sum()
    assert float(facenet.triplet_loss(a, p, n, 0.2)) == pytest.approx(want, rel=1e-5)


def test_contrastive_loss_matches_hand_computed_values():
    d = np.array([0.5, 0.3, 1.5, 0.0], np.float32)
    same = np.array([1, 0, 0, 1], np.int64)
    # similar: D^2/2 ; dissimilar: max(0, 1-D)^2/2  ->  .125, .245, 0, 0 ; mean over 4
    assert float(siamese.contrastive_loss(d, same)) == pytest.approx((0.125 + 0.245) / 4, abs=1e-6)
    # margin 2: the third pair (dissimilar, D=1.5) now costs (0.5)^2/2
    assert float(siamese.contrastive_loss(d, same, margin=2.0)) == pytest.approx((0.125 + 0.5 * 1.7**2 + 0.125) / 4, abs=1e-6)


# ---------------------------------------------------------------- siamese


def test_siamese_shares_one_tower():
    m = siamese.build("tiny")
    model = m.keras_model
    towers = [l for l in model.layers if isinstance(l, keras.Model)]
    assert len(towers) == 1
    tower = towers[0]
    assert len(model.weights) == len(tower.weights) > 0
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in tower.trainable_weights}

    rng = np.random.default_rng(0)
    x = rng.random((3, 105, 105, 1), dtype=np.float64).astype(np.float32)
    y = rng.random((3, 105, 105, 1), dtype=np.float64).astype(np.float32)
    same = m.serve(x, x)
    np.testing.assert_array_equal(same["distance"].numpy(), np.zeros(3, np.float32))
    np.testing.assert_array_equal(same["embedding_left"].numpy(), same["embedding_right"].numpy())
    xy, yx = m.serve(x, y), m.serve(y, x)
    np.testing.assert_allclose(xy["distance"].numpy(), yx["distance"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(xy["embedding_left"].numpy(), yx["embedding_right"].numpy(), rtol=1e-6)
    assert (xy["distance"].numpy() > 0).all()
    d = np.linalg.norm(xy["embedding_left"].numpy() - xy["embedding_right"].numpy(), axis=1)
    np.testing.assert_allclose(xy["distance"].numpy(), d, rtol=1e-5)


def test_facenet_embeddings_are_unit_length():
    m = facenet.build("tiny")
    x = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float64).astype(np.float32)
    e = m.serve(x)["embedding"].numpy()
    assert e.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------- fully convolutional models


SIZES = [(64, 64), (50, 70)]


@pytest.mark.parametrize("kind", ["32s", "16s", "8s"])
def test_fcn_output_has_input_size(kind):
    m = getattr(fcn, f"build_fcn{kind}")("tiny")
    for h, w in SIZES:
        x = np.random.default_rng(h).random((2, h, w, 3), dtype=np.float64).astype(np.float32)
        assert tuple(m.serve(x)["logits"].shape) == (2, h, w, 21)


@pytest.mark.parametrize("kind,skips", [("32s", []), ("16s", ["pool4"]), ("8s", ["pool4", "pool3"])])
def test_fcn_skips_are_joined_by_addition(kind, skips):
    model = fcn.fcn(kind, div=16, classes=21)
    adds = [l.name for l in model.layers if isinstance(l, keras.layers.Add)]
    assert adds == [f"fuse_{s}" for s in skips]
    names = {l.name for l in model.layers}
    for s in ("pool3", "pool4"):
        assert (f"score_{s}" in names) == (s in skips)


def test_fcn8s_output_depends_on_pool3_and_pool4_skips():
    model = fcn.fcn("8s", div=16, classes=21)
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float64).astype(np.float32)
    base = model(x, training=False).numpy()
    for skip in ("score_pool3", "score_pool4"):
        layer = model.get_layer(skip)
        saved = [w.numpy() for w in layer.weights]
        for w in layer.weights:
            w.assign(tf.zeros_like(w))
        changed = model(x, training=False).numpy()
        for w, v in zip(layer.weights, saved):
            w.assign(v)
        assert np.abs(changed - base).max() > 1e-3, f"zeroing {skip} does not change the output"


def test_vgg16_fcn_accepts_any_input_size():
    m = vgg16.build_vgg16_fcn("tiny")
    assert m.serve.input_signature[0].shape.as_list() == [None, None, None, 3]
    for h, w in SIZES + [(224, 160)]:
        x = np.random.default_rng(w).random((2, h, w, 3), dtype=np.float64).astype(np.float32)
        assert tuple(m.serve(x)["logits"].shape) == (2, 10)
    names = {l.name for l in m.keras_model.layers}
    assert {"fc6_conv", "fc7_conv", "fc8_conv"} <= names
    assert m.keras_model.get_layer("fc6_conv").kernel_size == (7, 7)
    assert not any(isinstance(l, keras.layers.Dense) for l in m.keras_model.layers)


def test_unet_output_has_input_size_and_four_concatenations():
    m = unet.build("tiny")
    for h, w in SIZES + [(37, 45)]:
        x = np.random.default_rng(h).random((1, h, w, 3), dtype=np.float64).astype(np.float32)
        assert tuple(m.serve(x)["logits"].shape) == (1, h, w, 2)
    model = m.keras_model
    concats = [l for l in model.layers if isinstance(l, keras.layers.Concatenate)]
    assert len(concats) == 4
    assert sum(isinstance(l, keras.layers.Conv2DTranspose) for l in model.layers) == 4
    assert sum(isinstance(l, keras.layers.MaxPooling2D) for l in model.layers) == 4
    assert not any(isinstance(l, keras.layers.Add) for l in model.layers)


# ---------------------------------------------------------------- video LSTM


def test_video_lstm_ignores_padding_frames():
    m = video_lstm.build("tiny")
    n = m.spec["input"]["frames"]
    rng = np.random.default_rng(0)
    frames = rng.random((2, n, 32, 32, 3), dtype=np.float64).astype(np.float32)
    lengths = np.array([3, n], np.int32)
    out = m.serve(frames, lengths)["logits"].numpy()

    other = frames.copy()
    other[0, 3:] = rng.random((n - 3, 32, 32, 3), dtype=np.float64).astype(np.float32) * 5.0
    out2 = m.serve(other, lengths)["logits"].numpy()
    np.testing.assert_allclose(out2[0], out[0], atol=1e-6)  # short clip: only padding changed
    # ... and the same padding change matters for the full-length clip
    other[1, 3:] = other[0, 3:]
    out3 = m.serve(other, lengths)["logits"].numpy()
    assert np.abs(out3[1] - out[1]).max() > 1e-4
    # a valid frame of the short clip does matter
    other[0, 1] = 0.0
    assert np.abs(m.serve(other, lengths)["logits"].numpy()[0] - out[0]).max() > 1e-4


def test_video_lstm_feature_extractor_is_frozen():
    model = video_lstm.build("tiny").keras_model
    cnn = model.get_layer("frame_cnn")
    assert not cnn.trainable and cnn.weights and not cnn.trainable_weights
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"lstm", "logits"}


# ---------------------------------------------------------------- LeNet-5 on digits


def test_lenet5_digits_accuracy(lenet):
    images = lenet.extra_files["golden/digits_test_images.npy"]
    labels = lenet.extra_files["golden/digits_test_labels.npy"]
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32) and images.max() > 200
    assert labels.dtype == np.int64 and labels.shape == (images.shape[0],) == (450,)
    inp = lenet.spec["input"]
    # The normalisation edgeinfer applies from edgeinfer.toml: (pixel * scale - mean) / std.
    x = ((images.astype(np.float32) * inp["scale"] - inp["mean"][0]) / inp["std"][0])[..., None]
    logits = lenet.serve(x)["logits"].numpy()
    acc = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert acc >= 0.95, acc


# ---------------------------------------------------------------- edgeinfer.toml and export

TASK_OUTPUTS = {
    "classify": {"logits", "softmax"},
    "segment": {"logits", "softmax"},
    "video": {"logits", "softmax"},
    "embed": {"embedding", "dim"},
    "siamese": {"distance", "embedding", "pair_embedding"},
}


@pytest.mark.parametrize("name", [n for n in MY_MODELS if n != "lenet5"])
def test_tiny_spec_matches_signature(name):
    check_spec(export.build(name, "tiny"))


def test_lenet5_spec_matches_signature(lenet):
    check_spec(lenet)


def check_spec(m: common.Exportable):
    spec = tomllib.loads(common.to_toml(m.spec))
    assert spec["signature"] == common.SIGNATURE and spec["variant"] in ("tiny", "full")
    assert spec["task"] in TASK_OUTPUTS
    assert TASK_OUTPUTS[spec["task"]] <= set(spec["output"])
    inp = spec["input"]
    sig = {s.name: s for s in m.serve.input_signature}
    assert inp["key"] in sig
    for s in sig.values():
        assert s.shape[0] is None, f"{s.name}: batch dimension must be dynamic"
    image = sig[inp["key"]]
    shape = image.shape.as_list()
    assert inp["layout"] == "NHWC" and inp["dtype"] == "float32" and image.dtype == tf.float32
    assert shape[-1] == inp["channels"] and len(inp["mean"]) == len(inp["std"]) == inp["channels"]
    if shape[-3] is not None:
        assert (shape[-3], shape[-2]) == (inp["height"], inp["width"])
    if spec["task"] in ("classify", "segment", "video"):
        assert len(spec["labels"]) >= 2
    if spec["task"] == "siamese":
        assert inp["pair_key"] in sig
    if spec["task"] == "video":
        assert shape[1] == inp["frames"] and sig[inp["lengths_key"]].dtype == tf.int32
    rng = np.random.default_rng(0)
    golden = m.golden_inputs(rng) if m.golden_inputs else common.default_golden_inputs(m.serve, rng)
    out = m.serve(*[golden[s.name] for s in m.serve.input_signature])
    for k, v in spec["output"].items():
        if isinstance(v, str):
            assert v in out, f"output {k} = {v!r} not in the signature outputs {sorted(out)}"


def test_export_writes_a_complete_version(tmp_path):
    m = siamese.build("tiny")
    path = common.export(m, str(tmp_path))
    for f in ("saved_model.pb", "edgeinfer.toml", "variables/variables.index", "golden/input_left.npy",
              "golden/input_right.npy", "golden/output_distance.npy"):
        assert os.path.exists(os.path.join(path, f)), f
    loaded = tf.saved_model.load(path)
    left = np.load(os.path.join(path, "golden/input_left.npy"))
    right = np.load(os.path.join(path, "golden/input_right.npy"))
    out = loaded.signatures[common.SIGNATURE](left=tf.constant(left), right=tf.constant(right))
    np.testing.assert_array_equal(out["distance"].numpy(), np.load(os.path.join(path, "golden/output_distance.npy")))
    assert out["distance"].numpy()[0] == 0.0  # golden pair 0 is an image with itself
