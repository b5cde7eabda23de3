"""Fast tests of train_seg.py: class weights, the two losses and the IoU metric
on hand-computed cases, the augmentation, and a 3-step smoke training with an
export (no real training here; train_seg.py prints its own held-out metrics).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_train_seg.py
"""
from __future__ import annotations

import json
import math
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import segshapes  # noqa: E402
from tfmodels.zoo import train_seg as T  # noqa: E402

# ------------------------------------------------------------------ class weights


def test_median_frequency_weights_hand_computed():
    # 3 classes on two 2x2 images: class 0 in both, class 1 only in the first, class 2 only in the second
    labels = np.array([[[0, 0], [0, 1]],
                       [[0, 2], [2, 2]]], np.uint8)
    # freq_c = pixels of c / pixels of the images containing c:
    #   c0: 4 / 8 = 0.5, c1: 1 / 4 = 0.25, c2: 3 / 4 = 0.75; median 0.5
    w = T.median_frequency_weights(labels, 3)
    np.testing.assert_allclose(w, [1.0, 2.0, 2 / 3], rtol=1e-6)
    assert w.dtype == np.float32
    # a class that never occurs gets weight 0 and does not enter the median
    w4 = T.median_frequency_weights(labels, 4)
    np.testing.assert_allclose(w4, [1.0, 2.0, 2 / 3, 0.0], rtol=1e-6)


def test_median_frequency_weights_favour_the_dot():
    _, labels = segshapes.generate(100, segshapes.SIZE, segshapes.TRAIN_SEED)
    w = T.median_frequency_weights(labels, 5)
    assert w[0] < 0.2 and w[4] == w.max() and w[4] > 4
    assert np.isclose(np.median(w), 1.0)


# ------------------------------------------------------------------ losses


def test_weighted_ce_hand_computed():
    logits = np.zeros((1, 1, 2, 3), np.float32)
    logits[0, 0, 0] = [math.log(2.0), 0.0, 0.0]  # p = .5 .25 .25
    labels = np.array([[[0, 2]]])  # -log p: log 2, log 4
    w = np.array([1.0, 5.0, 3.0], np.float32)
    got = float(T.weighted_ce(tf.constant(logits), tf.constant(labels), w))
    assert got == pytest.approx((1.0 * math.log(2) + 3.0 * math.log(3)) / 2, rel=1e-6)


def test_dice_loss_perfect_disjoint_and_hand_computed():
    labels = np.array([[[0, 1], [2, 2]]])  # one 2x2 image, 3 classes
    onehot = np.eye(3, dtype=np.float32)[labels]
    assert float(T.dice_loss_probs(onehot, labels)) == pytest.approx(0.0, abs=1e-7)
    # disjoint: every pixel predicted as another class -> intersection 0, D_c = eps / (|p_c| + |g_c| + eps)
    wrong = np.eye(3, dtype=np.float32)[(labels + 1) % 3]
    # |p| = (2, 1, 1), |g| = (1, 1, 2): D = 1/4, 1/3, 1/4 with eps = 1
    want = 1 - (1 / 4 + 1 / 3 + 1 / 4) / 3
    assert float(T.dice_loss_probs(wrong, labels)) == pytest.approx(want, rel=1e-6)
    assert float(T.dice_loss_probs(wrong, labels, eps=1e-6)) == pytest.approx(1.0, abs=1e-5)
    # soft probabilities, hand-computed with eps = 1
    p = np.array([[[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]],
                   [[0.0, 0.0, 1.0], [0.5, 0.0, 0.5]]]], np.float32)
    # squared (V-Net, the default): c0: inter .5, sum p^2 .5, |g| 1 -> (1 + 1) / (.5 + 1 + 1);
    # c1: inter 1, sum p^2 1.25, |g| 1 -> 3 / 3.25; c2: inter 1.5, sum p^2 1.25, |g| 2 -> 4 / 4.25
    assert T.DICE_SQUARED
    want = 1 - (2 / 2.5 + 3 / 3.25 + 4 / 4.25) / 3
    assert float(T.dice_loss_probs(p, labels)) == pytest.approx(want, rel=1e-6)
    # linear: c0: |p| 1 -> 2 / 3; c1: |p| 1.5 -> 3 / 3.5; c2: |p| 1.5 -> 4 / 4.5
    want = 1 - (2 / 3 + 3 / 3.5 + 4 / 4.5) / 3
    assert float(T.dice_loss_probs(p, labels, squared=False)) == pytest.approx(want, rel=1e-6)
    # the squared form ranks a uniform prediction above "background everywhere" (why it trains here)
    lab = np.zeros((1, 10, 10), int)
    lab[0, :2, :5] = 1
    uniform = np.full((1, 10, 10, 2), 0.5, np.float32)
    all_bg = np.eye(2, dtype=np.float32)[np.zeros_like(lab)]
    assert float(T.dice_loss_probs(uniform, lab)) < float(T.dice_loss_probs(all_bg, lab))
    assert float(T.dice_loss_probs(uniform, lab, squared=False)) > float(T.dice_loss_probs(all_bg, lab, squared=False))
    # dice_loss applies the softmax: huge correct logits -> 0
    assert float(T.dice_loss(tf.constant(onehot * 50.0), labels)) == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_class_absent_from_batch():
    labels = np.zeros((1, 2, 2), int)
    p = np.eye(2, dtype=np.float32)[labels]  # class 1 absent and never predicted: D_1 = eps / eps = 1
    assert float(T.dice_loss_probs(p, labels)) == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------ metric


def test_confusion_and_iou_toy():
    truth = np.array([[0, 0, 1, 1],
                      [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 1]])
    cm = T.confusion_matrix(truth, pred, 4)
    np.testing.assert_array_equal(cm, [[2, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    # IoU: c0 2 / (3 + 3 - 2) = .5, c1 3 / (3 + 4 - 3) = .75, c2 1 / 2 = .5, c3 absent and never predicted: nan
    iou = T.iou_from_confusion(cm)
    np.testing.assert_allclose(iou[:3], [0.5, 0.75, 0.5])
    assert math.isnan(iou[3])
    m = T.metrics_from_confusion(cm, ["a", "b", "c", "d"])
    assert m["mean_iou"] == pytest.approx((0.5 + 0.75 + 0.5) / 3, abs=1e-4)
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)
    # a class predicted but never true has IoU 0
    assert T.iou_from_confusion(T.confusion_matrix([0, 0], [0, 1], 2))[1] == 0.0


def test_dihedral_keeps_images_and_labels_aligned():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, (8, 6, 6)).astype(np.uint8)
    img = np.repeat(lab[..., None] * 10, 3, axis=-1).astype(np.uint8)  # image encodes its label
    im2, lb2 = T.dihedral(img, lab, np.arange(8))
    np.testing.assert_array_equal(im2[..., 0], lb2 * 10)
    np.testing.assert_array_equal(lb2[0], lab[0])
    np.testing.assert_array_equal(lb2[1], lab[1].T)
    seen = {T.dihedral(lab[:1, ..., None], lab[:1], np.array([k]))[1][0].tobytes() for k in range(8)}
    assert len(seen) == 8, "8 distinct transforms"


# ------------------------------------------------------------------ cache key, smoke training + export


def test_cache_key_and_paths(monkeypatch, tmp_path):
    k = T.cache_key()
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    s = T.Session(T.RECIPE)
    assert s.cached() == os.path.join(str(tmp_path), "edgeinfer", "trained", f"shapes_seg-{k}")
    assert s.compare_path().endswith(f"seg_compare-{k}.json")
    assert T.Session(T.SMOKE).key.startswith(k + "-")
    assert T.CHOSEN[0] in T.MODELS and T.CHOSEN[1] in T.LOSSES


@pytest.mark.parametrize("kind,loss", [("unet", "dice"), ("fcn8s", "wce")])
def test_smoke_training_runs(kind, loss):
    tf.config.experimental.enable_op_determinism()
    images, labels = segshapes.generate(8, 32, 0)
    r = T.Recipe(n_train=8, steps=3, batch=2, warmup=1)
    model = T.build_model(kind, r)
    before = [v.numpy().copy() for v in model.trainable_variables]
    lines = []
    sec = T.train(model, loss, r, images, labels, T.median_frequency_weights(labels, 5), lines.append)
    assert sec > 0 and len(lines) == 1 and np.isfinite(float(lines[0].split()[3]))
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables))
    m = T.evaluate(lambda x: model(x, training=False), images[:4], labels[:4])
    assert 0.0 <= m["mean_iou"] <= 1.0 and set(m["iou"]) == set(segshapes.CLASSES)


def test_golden_tolerance():
    assert T.golden_tolerance(np.array([0.5, -3.0])) == 1e-4
    assert T.golden_tolerance(np.array([[-558.08, 12.0]])) == 6e-3
    assert T.golden_tolerance(np.array([20.0])) == 2e-4
    assert T.golden_tolerance(np.array([21.0])) == 3e-4


def test_smoke_export(tmp_path):
    images, labels = segshapes.generate(T.N_GOLDEN, T.SIZE, T.EVAL_SEED)
    model = T.build_model("unet", T.SMOKE)
    vdir = T.export_version(model, "unet", images, labels, str(tmp_path))
    assert vdir == os.path.join(str(tmp_path), "shapes_seg", "1")
    with open(os.path.join(vdir, "edgeinfer.toml")) as f:
        toml = f.read()
    assert 'task = "segment"' in toml
    assert 'labels = ["background", "circle", "square", "triangle", "dot"]' in toml
    assert "height = 96" in toml and "width = 96" in toml and "softmax = true" in toml
    assert 'logits = "logits"' in toml and "scale = 0.00392156862745098" in toml
    assert toml.rstrip().endswith("[validation]\ntolerance = 0.0001")  # random weights: small logits
    g = os.path.join(vdir, "golden")
    x = np.load(os.path.join(g, "input_images.npy"))
    np.testing.assert_allclose(x, T.preprocess(images[:4]))
    assert np.load(os.path.join(g, "output_logits.npy")).shape == (4, 96, 96, 5)
    np.testing.assert_array_equal(np.load(os.path.join(g, "seg_labels.npy")), labels)
    assert np.load(os.path.join(g, "seg_images.npy")).shape == (T.N_GOLDEN, 96, 96, 3)
    with open(os.path.join(g, "signatures.json")) as f:
        sig = json.load(f)["serving_default"]
    assert sig["outputs"]["logits"]["shape"] == [-1, -1, -1, 5]
