"""Fast tests of train_video.py: frame sampling, augmentation labels against the shapes' real
motion, the pooling and difference layers on hand-computed cases, and a 3-step smoke training
with an export whose three signatures must agree, whose mask must hide the padding and whose
manifest must hold only keys the Go manifest reader knows (no real training here;
train_video.py prints its own held-out metrics).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_train_video.py
"""
from __future__ import annotations

import json
import os
import re
import tomllib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import clips, common  # noqa: E402
from tfmodels.zoo import train_video as V  # noqa: E402
from tfmodels.zoo.test_clips import motion_class  # noqa: E402

MANIFEST_GO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifest", "manifest.go")

# ------------------------------------------------------------------ sampling and augmentation


def test_sample_modes():
    rng = np.random.default_rng(0)
    seen = {m: set() for m in V.SAMPLINGS}
    for _ in range(400):
        for mode in V.SAMPLINGS:
            idx = V.sample(rng, mode)
            assert idx.dtype == np.int64 and idx[0] >= 0 and idx[-1] < clips.FRAMES
            assert np.all(np.diff(idx) >= 1), "increasing, no frame twice"
            if mode == "short":
                assert V.MIN_SHORT <= len(idx) < V.FRAMES
            else:
                assert len(idx) == V.FRAMES
            if mode == "rate":
                assert len(set(np.diff(idx))) == 1 and np.diff(idx)[0] <= V.MAX_STRIDE
            seen[mode].add((len(idx), int(idx[-1] - idx[0])))
    assert max(w for _, w in seen["even"]) == clips.FRAMES - 1, "the whole clip is one of the windows"
    assert {w for _, w in seen["rate"]} == {7, 14, 21}, "strides 1, 2 and 3"
    assert {n for n, _ in seen["short"]} == set(range(V.MIN_SHORT, V.FRAMES))
    with pytest.raises(ValueError):
        V.sample(rng, "random")


def test_eval_samplings():
    assert V.EVAL_SAMPLINGS["even8"].tolist() == [0, 3, 7, 10, 13, 16, 20, 23]
    assert V.EVAL_SAMPLINGS["rate1"].tolist() == list(range(8, 16))
    assert V.EVAL_SAMPLINGS["rate3"].tolist() == list(range(1, 23, 3))
    for name, idx in V.EVAL_SAMPLINGS.items():
        assert 2 <= len(idx) <= V.FRAMES and idx[0] >= 0 and idx[-1] < clips.FRAMES, name
        assert name.startswith("short") == (len(idx) < V.FRAMES), name


def test_augment_labels_follow_the_motion():
    for i in range(6):
        c = clips.clip(clips.TRAIN_SEED, i)
        for t in range(8):
            for reverse in (False, True):
                masks, label = V.augment(c.masks[..., None], c.label, t, reverse)
                assert motion_class(masks[..., 0]) == label, (clips.CLASSES[c.label], t, reverse)
                frames, label2 = V.augment(c.frames, c.label, t, reverse)
                assert label2 == label and frames.shape == c.frames.shape


def test_pad_and_batch():
    rng = np.random.default_rng(0)
    f = np.zeros((3, 4, 4, 3), np.uint8)
    p = V.pad(f, rng)
    assert p.shape == (V.FRAMES, 4, 4, 3) and not p[:3].any() and p[3:].std() > 50
    data, labels = clips.generate(6, 0)
    x, ln, y = V.batch(rng, data, labels, 4)
    assert x.shape == (4, V.FRAMES, V.SIZE, V.SIZE, 3) and x.dtype == np.float32
    assert ln.dtype == np.int32 and ((ln >= V.MIN_SHORT) & (ln <= V.FRAMES)).all()
    assert y.dtype == np.int32 and ((y >= 0) & (y < 6)).all()


def test_accuracy():
    m = V.accuracy(np.array([0, 1, 1, 4]), np.array([0, 1, 2, 4]))
    assert m == {"accuracy": 0.75, "per_class": {"left": 1.0, "right": 1.0, "up": 0.0, "grow": 1.0}}


# ------------------------------------------------------------------ layers


def test_coord_channels():
    x = np.zeros((2, 2, 4, 1), np.float32)
    y = V.CoordChannels()(x).numpy()
    assert y.shape == (2, 2, 4, 3)
    np.testing.assert_allclose(y[1, 0, :, 1], [-0.75, -0.25, 0.25, 0.75])  # x across the columns
    np.testing.assert_allclose(y[1, :, 2, 2], [-0.5, 0.5])  # y down the rows


def test_moment_pool_follows_the_blob():
    a = np.zeros((2, 4, 4, 2), np.float32)
    a[0, 1, 3, 0] = 8.0  # row 1 (y = -0.25), column 3 (x = 0.75)
    a[1, 2:4, 0:2, 0] = 1.0  # a 2x2 blob, lower left: x = -0.5, y = 0.5 on average
    a[:, :, :, 1] = 1.0  # a uniform map: mass 1, moments 0
    f = V.MomentPool()(a).numpy()
    assert f.shape == (2, 6)  # mass (2 maps), x moment (2), y moment (2)
    np.testing.assert_allclose(f[0], [0.5, 1.0, 0.5 * 0.75, 0.0, 0.5 * -0.25, 0.0], atol=1e-7)
    np.testing.assert_allclose(f[1], [0.25, 1.0, 0.25 * -0.5, 0.0, 0.25 * 0.5, 0.0], atol=1e-7)


def test_frame_diff_masks_first_frame_and_padding():
    f = np.array([[[1.0], [3.0], [6.0], [100.0]]], np.float32)
    valid = np.array([[True, True, True, False]])
    np.testing.assert_allclose(V.FrameDiff()(f, valid).numpy()[0, :, 0], [0.0, 2.0, 3.0, 0.0])


# ------------------------------------------------------------------ smoke training and export


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tf.config.experimental.enable_op_determinism()
    data, labels = clips.generate(V.SMOKE.n_train, clips.TRAIN_SEED)
    ev, _ = clips.generate(4, clips.HELDOUT_SEED)
    model = V.build_model(V.SMOKE)
    before = [v.numpy().copy() for v in model.full.trainable_variables]
    lines = []
    seconds = V.train(model, V.SMOKE, data, labels, lines.append)
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.full.trainable_variables)]
    vdir = V.export_version(model, ev, str(tmp_path_factory.mktemp("models")))
    return {"model": model, "vdir": vdir, "sigs": tf.saved_model.load(vdir).signatures, "seconds": seconds,
            "lines": lines, "changed": changed, "ev": ev}


def test_smoke_training_trains_cnn_and_head(smoke):
    assert smoke["seconds"] > 0 and len(smoke["lines"]) == 1 and "loss" in smoke["lines"][0]
    assert all(smoke["changed"]), "every trainable variable (CNN and head) moved"
    m = smoke["model"]
    assert m.cnn.count_params() + m.head.count_params() == m.full.count_params()
    assert m.cnn.output.shape == (None, V.FEATURES)


def test_export_signatures(smoke):
    assert smoke["vdir"].endswith(os.path.join(V.NAME, str(V.VERSION)))
    with open(os.path.join(smoke["vdir"], "golden", "signatures.json")) as f:
        sigs = json.load(f)
    assert set(sigs) == {common.SIGNATURE, V.FEATURES_SIGNATURE, V.CLIP_SIGNATURE}
    shape = lambda s, io, k: sigs[s][io][k]["shape"]  # noqa: E731
    assert shape("serving_default", "inputs", "frames") == [-1, V.FRAMES, V.SIZE, V.SIZE, 3]
    assert shape("serving_default", "inputs", "lengths") == [-1]
    assert shape("serving_default", "outputs", "logits") == [-1, 6]
    assert shape("features", "inputs", "images") == [-1, V.SIZE, V.SIZE, 3]
    assert shape("features", "outputs", "features") == [-1, V.FEATURES]
    assert shape("clip", "inputs", "features") == [-1, V.FRAMES, V.FEATURES]
    assert shape("clip", "inputs", "lengths") == [-1]
    assert shape("clip", "outputs", "logits") == [-1, 6]
    assert sigs["clip"]["inputs"]["lengths"]["dtype"] == 3  # DT_INT32


def test_serving_default_is_clip_of_features(smoke):
    sigs = smoke["sigs"]
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (3, V.FRAMES, V.SIZE, V.SIZE, 3)).astype(np.float32)
    for lengths in ([8, 8, 8], [8, 5, 1]):
        ln = tf.constant(lengths, tf.int32)
        whole = sigs["serving_default"](frames=tf.constant(x), lengths=ln)["logits"].numpy()
        feats = sigs["features"](images=tf.constant(x.reshape(-1, V.SIZE, V.SIZE, 3)))["features"].numpy()
        parts = sigs["clip"](features=tf.constant(feats.reshape(3, V.FRAMES, V.FEATURES)), lengths=ln)["logits"].numpy()
        np.testing.assert_allclose(whole, parts, atol=1e-5)
    # the features of a frame do not depend on the other frames of the batch
    one = sigs["features"](images=tf.constant(x[0, :1]))["features"].numpy()
    np.testing.assert_allclose(one[0], feats[0], atol=1e-5)


def test_mask_hides_padding(smoke):
    sigs = smoke["sigs"]
    rng = np.random.default_rng(6)
    x = V.preprocess(np.stack([V.pad(smoke["ev"][i][:8], rng) for i in range(3)]))
    ln = tf.constant([3, 6, 8], tf.int32)
    run = lambda f: sigs["serving_default"](frames=tf.constant(f), lengths=ln)["logits"].numpy()  # noqa: E731
    base = run(x)
    y = x.copy()
    y[0, 3:] = rng.normal(0, 2, y[0, 3:].shape)
    y[1, 6:] = 0.0
    np.testing.assert_array_equal(run(y)[:2], base[:2])  # frames past length change nothing
    z = x.copy()
    z[0, 1] = rng.normal(0, 2, z[0, 1].shape)  # a valid frame does change the logits
    assert np.abs(run(z)[0] - base[0]).max() > 1e-4
    f = rng.normal(0, 1, (1, V.FRAMES, V.FEATURES)).astype(np.float32)
    g = f.copy()
    g[0, 4:] = 1e3
    clip = lambda a: sigs["clip"](features=tf.constant(a), lengths=tf.constant([4], tf.int32))["logits"].numpy()  # noqa: E731
    np.testing.assert_array_equal(clip(f), clip(g))


def test_golden_files_agree(smoke):
    g = lambda n: np.load(os.path.join(smoke["vdir"], "golden", n + ".npy"))  # noqa: E731
    frames, lengths = g("input_frames"), g("input_lengths")
    assert frames.shape == (4, V.FRAMES, V.SIZE, V.SIZE, 3) and lengths.tolist() == [8, 8, 5, 3]
    assert g("output_logits").shape == (4, 6)
    np.testing.assert_array_equal(g("features_input_images"), frames.reshape(-1, V.SIZE, V.SIZE, 3))
    assert g("features_output_features").shape == (4 * V.FRAMES, V.FEATURES)
    np.testing.assert_array_equal(g("clip_input_features"), g("features_output_features").reshape(4, V.FRAMES, V.FEATURES))
    np.testing.assert_array_equal(g("clip_input_lengths"), lengths)
    np.testing.assert_allclose(g("clip_output_logits"), g("output_logits"), atol=1e-5)
    # the golden frames are held-out clips 0..3 as edgeinfer.toml normalises them
    np.testing.assert_allclose(frames[0], V.preprocess(smoke["ev"][0][V.EVAL_SAMPLINGS["even8"]]))


def go_manifest_keys() -> dict[str, set[str]]:
    """The toml keys of the Go Manifest struct and of its tables, read from manifest.go."""
    src = open(MANIFEST_GO).read()
    keys = {}
    for struct, body in re.findall(r"^type (\w+) struct \{(.*?)^\}", src, re.S | re.M):
        keys[struct] = set(re.findall(r'toml:"(\w+)"', body))
    return {"": keys["Manifest"], "input": keys["Input"], "output": keys["Output"], "validation": keys["Validation"],
            "video": keys["Video"]}


def test_manifest_is_the_strict_set(smoke):
    with open(os.path.join(smoke["vdir"], "edgeinfer.toml"), "rb") as f:
        m = tomllib.load(f)
    known = go_manifest_keys()
    assert "lengths_key" in known["input"] and "softmax" in known["output"], "manifest.go was read"
    assert set(m) <= known[""]
    for table in ("input", "output", "validation", "video"):
        assert set(m[table]) <= known[table], table
    assert m["task"] == "video" and m["signature"] == "serving_default" and m["variant"] == "tiny"
    assert m["labels"] == clips.CLASSES
    assert m["input"] == {"key": "frames", "height": 48, "width": 48, "channels": 3, "layout": "NHWC",
                          "dtype": "float32", "resize": "stretch", "scale": 1.0 / 255.0,
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "frames": V.FRAMES, "lengths_key": "lengths"}
    assert m["output"] == {"logits": "logits", "softmax": True}
    assert m["validation"]["tolerance"] >= 1e-4
    assert m["video"] == {"features_signature": "features", "features_input": "images", "features_output": "features",
                          "clip_signature": "clip", "clip_features": "features", "clip_lengths": "lengths",
                          "clip_logits": "logits"}
    sigs = smoke["sigs"]  # every name the [video] table gives is in the export
    for sig, keys in ((m["video"]["features_signature"], (m["video"]["features_input"],)),
                      (m["video"]["clip_signature"], (m["video"]["clip_features"], m["video"]["clip_lengths"]))):
        assert set(keys) == set(sigs[sig].structured_input_signature[1]), sig
    assert m["video"]["features_output"] in sigs[m["video"]["features_signature"]].structured_outputs
    assert m["video"]["clip_logits"] in sigs[m["video"]["clip_signature"]].structured_outputs


def test_cache_key_and_paths(monkeypatch, tmp_path):
    k = V.cache_key()
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert V.Session(V.RECIPE).cached() == os.path.join(str(tmp_path), "edgeinfer", "trained", f"clips_video-{k}")
    assert V.Session(V.SMOKE).key.startswith(k + "-")
