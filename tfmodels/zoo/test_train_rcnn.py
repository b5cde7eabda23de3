"""Fast tests of train_rcnn.py's training pieces on hand-computed cases: IoU,
delta encoding, smooth-L1, RPN anchor targets, RoI sampling, mask targets, the
losses, and the evaluation (AP, mask paste).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_train_rcnn.py

No training and no model is run here (the trained exports are checked by
train_rcnn.py itself, which prints their metrics).
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import detect_ref, faster_rcnn  # noqa: E402
from tfmodels.zoo import train_rcnn as T  # noqa: E402

# ------------------------------------------------------------------ boxes


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], np.float32)
    got = T.box_iou(a, b).numpy()
    want = [[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # batched: [B, N, 4] x [B, M, 4]
    assert T.box_iou(a[None].repeat(3, 0), b[None].repeat(3, 0)).shape == (3, 2, 3)


def test_encode_deltas_hand_computed_and_inverse_of_decode():
    ref = np.array([[0, 0, 2, 2]], np.float32)  # centre (1, 1), h = w = 2
    box = np.array([[1, 0, 3, 4]], np.float32)  # centre (2, 2), h = 2, w = 4
    np.testing.assert_allclose(T.encode_deltas(ref, box).numpy(), [[0.5, 0.5, 0.0, math.log(2)]], atol=1e-6)
    stds = faster_rcnn.RCNN_DELTA_STDS
    np.testing.assert_allclose(T.encode_deltas(ref, box, stds).numpy(), [[5.0, 5.0, 0.0, math.log(2) / 0.2]],
                               rtol=1e-6)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.5, (50, 4)).astype(np.float32)
    a[:, 2:] = a[:, :2] + rng.uniform(0.05, 0.5, (50, 2))
    b = rng.uniform(0, 0.5, (50, 4)).astype(np.float32)
    b[:, 2:] = b[:, :2] + rng.uniform(0.05, 0.5, (50, 2))
    for s in ((1.0, 1.0, 1.0, 1.0), stds):
        back = faster_rcnn.decode_deltas(a, T.encode_deltas(a, b, s), s).numpy()
        np.testing.assert_allclose(back, b, atol=1e-5)


def test_smooth_l1_hand_computed():
    x = tf.constant([0.0, 0.5, 2.0, -3.0])
    np.testing.assert_allclose(T.smooth_l1(x, 1.0).numpy(), [0.0, 0.125, 1.5, 2.5], atol=1e-7)
    x = tf.constant([0.1, -1.0])
    np.testing.assert_allclose(T.smooth_l1(x, 1 / 9).numpy(), [0.5 * 0.01 * 9, 1 - 1 / 18], rtol=1e-5)


# ------------------------------------------------------------------ RPN anchor targets

ANCHORS = np.array([
    [0.0, 0.0, 0.5, 0.5],   # A0
    [0.0, 0.0, 0.5, 1.0],   # A1
    [0.5, 0.5, 1.0, 1.0],   # A2
    [0.0, 0.3, 0.5, 0.8],   # A3
], np.float32)


def test_rpn_targets_labels_hand_computed():
    gt = np.zeros((3, 2, 4), np.float32)
    valid = np.array([[1, 0], [1, 0], [1, 0]], np.float32)  # slot 1 is padding
    gt[0, 0] = [0.0, 0.0, 0.5, 0.5]  # IoU A0 1, A1 .5, A2 0, A3 .25
    gt[1, 0] = [0.0, 0.0, 0.5, 1.0]  # IoU A0 .5, A1 1, A2 0, A3 .5
    gt[2, 0] = [0.1, 0.0, 0.5, 0.7]  # IoU A0 .606, A1 .56, A2 0, A3 .432: A0 positive as the best anchor
    iou = T.box_iou(ANCHORS, gt[:, :1]).numpy()[..., 0]
    np.testing.assert_allclose(iou, [[1, .5, 0, .25], [.5, 1, 0, .5], [.2 / .33, .56, 0, .16 / .37]], atol=1e-5)
    key = np.full((3, 4), 0.5, np.float32)
    labels, deltas = T.rpn_targets(ANCHORS, gt, valid, key)
    np.testing.assert_array_equal(labels.numpy(), [[1, -1, 0, 0], [-1, 1, 0, -1], [1, -1, 0, -1]])
    # regression target of a positive: from the anchor to its gt box
    np.testing.assert_allclose(deltas.numpy()[0, 0], [0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(deltas.numpy()[2, 0], T.encode_deltas(ANCHORS[:1], gt[2, :1]).numpy()[0], atol=1e-6)


def test_rpn_targets_best_anchor_rule_ignores_padding_and_low_iou():
    # a gt box overlapping nothing gives no positive; a padded slot (valid 0) is never matched
    gt = np.array([[[0.9, 0.0, 1.0, 0.1], [0.0, 0.0, 0.5, 0.5]]], np.float32)
    labels, _ = T.rpn_targets(ANCHORS, gt, np.array([[1, 0]], np.float32), np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(labels.numpy(), [[0, 0, 0, 0]])


def test_rpn_targets_sampling_caps_positives_and_fills_with_negatives():
    box = [0.0, 0.0, 0.5, 0.5]
    anchors = np.array([box] * 6 + [[0.6, 0.6, 1.0, 1.0]] * 3, np.float32)  # 6 positives, 3 negatives
    key = np.array([[.1, .9, .2, .8, .3, .4, .5, .7, .6]], np.float32)
    labels, _ = T.rpn_targets(anchors, np.array([[box]], np.float32), np.ones((1, 1)), key,
                              batch_size=4, pos_fraction=0.5)
    # at most 2 positives (highest keys .9, .8), then 4 - 2 negatives (highest keys .7, .6)
    np.testing.assert_array_equal(labels.numpy(), [[-1, 1, -1, 1, -1, -1, -1, 0, 0]])
    # too few positives: negatives fill the rest of the batch
    labels, _ = T.rpn_targets(anchors[4:], np.array([[box]], np.float32), np.ones((1, 1)), key[:, 4:],
                              batch_size=4, pos_fraction=0.5)
    np.testing.assert_array_equal(labels.numpy(), [[1, 1, -1, 0, 0]])


# ------------------------------------------------------------------ RoI sampling


def test_sample_rois_foreground_first_with_cap_and_filler():
    gt = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]], np.float32)
    classes = np.array([[2, 0]], np.int32)
    rois = np.array([[
        [0.0, 0.0, 0.5, 0.5],    # IoU 1 with gt 0 -> fg, class 2
        [0.0, 0.0, 0.5, 0.6],    # IoU .833 with gt 0 -> fg
        [0.5, 0.5, 1.0, 0.9],    # IoU .8 with gt 1 -> fg, class 0
        [0.0, 0.0, 0.5, 1.0],    # IoU .5 with gt 0 -> fg (>= 0.5)
        [0.0, 0.5, 0.5, 1.0],    # IoU 0 -> bg
        [0.0, 0.0, 0.0, 0.0],    # invalid (padding)
    ]], np.float32)
    valid = np.array([[1, 1, 1, 1, 1, 0]], np.float32)
    key = np.array([[.9, .2, .8, .1, .5, .99]], np.float32)
    s = T.sample_rois(rois, valid, gt, classes, np.ones((1, 2)), key, num=4, fg_fraction=0.5)
    # 2 foreground (highest keys: rois 0 and 2), then the only background, then filler
    np.testing.assert_allclose(s["rois"].numpy()[0, :3], rois[0, [0, 2, 4]])
    np.testing.assert_array_equal(s["labels"].numpy(), [[3, 1, 0, 0]])
    np.testing.assert_array_equal(s["fg"].numpy(), [[True, True, False, False]])
    np.testing.assert_array_equal(s["weights"].numpy(), [[1, 1, 1, 0]])
    np.testing.assert_array_equal(s["gt_index"].numpy()[0, :2], [0, 1])
    want = T.encode_deltas(rois[0, [0, 2]], gt[0, [0, 1]], faster_rcnn.RCNN_DELTA_STDS).numpy()
    np.testing.assert_allclose(s["targets"].numpy()[0, :2], want, atol=1e-6)
    np.testing.assert_allclose(want[0], 0, atol=1e-6)
    # more room: all four foreground candidates and the background are taken, nothing invalid
    s = T.sample_rois(rois, valid, gt, classes, np.ones((1, 2)), key, num=6, fg_fraction=1.0)
    np.testing.assert_array_equal(s["labels"].numpy(), [[3, 1, 3, 3, 0, 0]])
    np.testing.assert_array_equal(s["weights"].numpy(), [[1, 1, 1, 1, 1, 0]])


# ------------------------------------------------------------------ mask targets and paste


def test_mask_targets_sample_cell_centres():
    rng = np.random.default_rng(0)
    m = rng.random((1, 2, 64, 64)) < 0.5
    # a 28-pixel RoI: cell j samples pixel 8 + j exactly
    roi = np.array([[[8 / 64, 8 / 64, 36 / 64, 36 / 64]]], np.float32)
    t = T.mask_targets(m.astype(np.float32), roi, np.array([[1]], np.int32)).numpy()
    np.testing.assert_array_equal(t[0, 0], m[0, 1, 8:36, 8:36])
    # a 56-pixel RoI: cell j samples halfway between pixels 2j and 2j + 1
    half = np.zeros((1, 1, 64, 64), np.float32)
    half[..., :, :27] = 1.0  # columns 0..26
    roi = np.array([[[0.0, 0.0, 56 / 64, 56 / 64]]], np.float32)
    t = T.mask_targets(half, roi, np.array([[0]], np.int32)).numpy()[0, 0]
    assert np.all(t[:, :13] == 1) and np.all(t[:, 14:] == 0)
    assert np.all(t[:, 13] == 1)  # (1 + 0) / 2 = 0.5 >= 0.5


def test_paste_mask_matches_detect_ref_and_inverts_targets():
    rng = np.random.default_rng(1)
    for _ in range(10):
        mask = rng.random((28, 28)).astype(np.float32)
        y1, x1 = rng.uniform(-10, 100, 2)
        box = np.array([y1, x1, y1 + rng.uniform(3, 60), x1 + rng.uniform(3, 60)]) / 128
        got = T.paste_mask(mask, box, 128)
        want = detect_ref.paste_mask(mask, box[[1, 0, 3, 2]] * 128, 128, 128, 0.5)
        np.testing.assert_array_equal(got, want.astype(bool))
    # a disc: its 28x28 target pasted back into the same box gives the disc again (up to the edge)
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    disc = (yy - 60) ** 2 + (xx - 50) ** 2 <= 25 ** 2
    box = np.array([35, 25, 85, 75], np.float32) / 128
    t = T.mask_targets(disc[None, None].astype(np.float32), box[None, None], np.zeros((1, 1), np.int32)).numpy()
    back = T.paste_mask(t[0, 0], box, 128)
    iou = (back & disc).sum() / (back | disc).sum()
    assert iou > 0.95, iou


# ------------------------------------------------------------------ losses


def test_rpn_loss_hand_computed():
    logits = np.zeros((1, 3, 2), np.float32)
    logits[0, 1] = [0.0, math.log(3)]  # p(fg) = 3/4
    labels = np.array([[1, 0, -1]], np.int32)
    deltas = np.zeros((1, 3, 4), np.float32)
    deltas[0, 0] = [0.1, 0, 0, 0]  # |x| < 1/9: 0.5 * 0.01 * 9
    deltas[0, 1] = [5, 5, 5, 5]  # negative: no box loss
    cls, box = T.rpn_loss(tf.constant(logits), tf.constant(deltas), tf.constant(labels), tf.zeros((1, 3, 4)))
    np.testing.assert_allclose(float(cls), (math.log(2) + math.log(4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(box), 0.045 / 2, rtol=1e-5)


def test_head_loss_uses_the_gt_class_deltas():
    c = 2
    logits = np.zeros((1, 3, c + 1), np.float32)  # uniform: CE = log 3
    deltas = np.full((1, 3, 4 * c), 7.0, np.float32)
    deltas[0, 0, 4:8] = [0.5, 0, 0, 0]  # roi 0 is class 2 (label 2): its slot 1 deltas
    labels = np.array([[2, 0, 1]], np.int32)
    weights = np.array([[1, 1, 0]], np.float32)  # roi 2 is filler
    cls, box = T.head_loss(tf.constant(logits), tf.constant(deltas), tf.constant(labels), tf.constant(weights),
                           tf.zeros((1, 3, 4)))
    np.testing.assert_allclose(float(cls), math.log(3), rtol=1e-6)
    np.testing.assert_allclose(float(box), 0.125 / 2, rtol=1e-6)


def test_mask_loss_selects_the_gt_class_channel():
    n, c = 4, 3
    logits = np.full((1, 2, n, n, c), -20.0, np.float32)
    logits[0, 0, :, :, 1] = 20.0  # roi 0 (class 2): right channel, confident, target 1
    targets = np.ones((1, 2, n, n), np.float32)
    labels = np.array([[2, 0]], np.int32)
    fg = np.array([[True, False]])
    loss = T.mask_loss(tf.constant(logits), tf.constant(labels), tf.constant(fg), tf.constant(targets))
    assert float(loss) < 1e-6
    logits[0, 0, :2, :, 1] = 0.0  # half the pixels at p = 0.5: mean BCE = log(2) / 2
    loss = T.mask_loss(tf.constant(logits), tf.constant(labels), tf.constant(fg), tf.constant(targets))
    np.testing.assert_allclose(float(loss), math.log(2) / 2, rtol=1e-5)


# ------------------------------------------------------------------ data and evaluation


def test_gt_arrays_and_flip():
    m = np.zeros((8, 8), bool)
    m[1:3, 2:6] = True
    objects = [[{"class": 2, "box": (2.0, 1.0, 6.0, 3.0), "mask": m}], []]
    boxes, classes, valid, masks = T.gt_arrays(objects, size=8, max_objects=2)
    np.testing.assert_allclose(boxes[0, 0], [1 / 8, 2 / 8, 3 / 8, 6 / 8])
    assert classes[0, 0] == 2 and valid.tolist() == [[1, 0], [0, 0]] and masks[0, 0].sum() == 8
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    fi, fb, fm = T.flip_batch(images, boxes, masks, np.array([True, False]))
    np.testing.assert_allclose(fb[0, 0], [1 / 8, 2 / 8, 3 / 8, 6 / 8])  # symmetric box
    np.testing.assert_array_equal(fm[0, 0], m[:, ::-1])
    np.testing.assert_array_equal(fi[0], images[0, :, ::-1])
    np.testing.assert_array_equal(fi[1], images[1])


def test_average_precision_hand_computed():
    # tp, fp, tp over 2 gt: precision 1, .5, .667 at recall .5, .5, 1 -> .5 * 1 + .5 * 2/3
    assert T.average_precision([1, 0, 1], [0.9, 0.8, 0.7], 2) == pytest.approx(0.5 + 1 / 3)
    assert T.average_precision([0, 1], [0.9, 0.8], 1) == pytest.approx(0.5)
    assert T.average_precision([], [], 3) == 0.0
    assert math.isnan(T.average_precision([], [], 0))


def _random_case(rng, n_img=12, classes=3):
    objects, outs = [], {"detection_boxes": [], "detection_scores": [], "detection_classes": [],
                         "num_detections": [], "detection_masks": []}
    m = 10
    for _ in range(n_img):
        objs = []
        for _ in range(rng.integers(1, 4)):
            x1, y1 = rng.integers(0, 90, 2).astype(float)
            w, h = rng.integers(10, 38, 2).astype(float)
            mask = np.zeros((128, 128), bool)
            mask[int(y1):int(y1 + h), int(x1):int(x1 + w)] = True  # the box is tight
            objs.append({"class": int(rng.integers(classes)), "box": (x1, y1, x1 + w, y1 + h), "mask": mask})
        objects.append(objs)
        k = int(rng.integers(0, m))
        b = np.zeros((m, 4), np.float32)
        for j in range(k):
            if objs and rng.random() < 0.7:  # a jittered copy of a gt box
                o = objs[rng.integers(len(objs))]
                x1, y1, x2, y2 = np.asarray(o["box"]) + rng.normal(0, 4, 4)
            else:
                x1, y1 = rng.uniform(0, 100, 2)
                x2, y2 = x1 + rng.uniform(5, 30), y1 + rng.uniform(5, 30)
            b[j] = np.clip([y1, x1, y2, x2], 0, 128) / 128
        outs["detection_boxes"].append(b)
        s = np.zeros(m, np.float32)
        s[:k] = np.sort(rng.random(k))[::-1]
        outs["detection_scores"].append(s)
        outs["detection_classes"].append(rng.integers(1, classes + 1, m).astype(np.float32))
        outs["num_detections"].append(np.float32(k))
        outs["detection_masks"].append(np.ones((m, 28, 28), np.float32))
    return {k: np.stack(v) for k, v in outs.items()}, objects


def test_evaluate_matches_detect_ref_voc_ap():
    rng = np.random.default_rng(3)
    outs, objects = _random_case(rng)
    got = T.evaluate(outs, objects, 3)
    dets, gts = [], []
    for i, objs in enumerate(objects):
        for o in objs:
            gts.append((i, o["class"], o["box"]))
        for j in range(int(outs["num_detections"][i])):
            y1, x1, y2, x2 = outs["detection_boxes"][i, j] * 128
            dets.append((i, int(outs["detection_classes"][i, j]) - 1, float(outs["detection_scores"][i, j]),
                         (x1, y1, x2, y2)))
    want, per = detect_ref.mean_ap(dets, gts, 0.5, "all", "voc", classes=[0, 1, 2])
    assert got["map50"] == pytest.approx(want, abs=1e-9)
    assert got["ap50"] == pytest.approx([round(per[c], 4) for c in range(3)], abs=1e-9)
    assert 0.0 < want < 1.0


def test_evaluate_perfect_detections():
    rng = np.random.default_rng(4)
    _, objects = _random_case(rng, n_img=5)
    m = 10
    outs = {"detection_boxes": np.zeros((5, m, 4), np.float32), "detection_scores": np.zeros((5, m), np.float32),
            "detection_classes": np.ones((5, m), np.float32), "num_detections": np.zeros(5, np.float32),
            "detection_masks": np.ones((5, m, 28, 28), np.float32)}
    for i, objs in enumerate(objects):
        for j, o in enumerate(objs):
            x1, y1, x2, y2 = o["box"]
            outs["detection_boxes"][i, j] = np.array([y1, x1, y2, x2]) / 128
            outs["detection_scores"][i, j] = 0.9
            outs["detection_classes"][i, j] = o["class"] + 1
        outs["num_detections"][i] = len(objs)
    got = T.evaluate(outs, objects, 3)
    assert got["map50"] == pytest.approx(1.0)
    assert got["n_matched"] == sum(len(o) for o in objects)
    # all-ones masks pasted into the tight boxes of rectangles: the rectangles
    assert got["mask_iou"] == pytest.approx(1.0)
