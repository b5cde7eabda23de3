"""Tests for the detection zoo: yolov3.py, faster_rcnn.py, mask_rcnn.py.

    .venv/bin/python -m pytest -q tfmodels/zoo/test_detection.py

Full-size models are built once per module (fixtures) and only inspected
(layer topology, shapes, parameter counts); only tiny models are run.
"""
from __future__ import annotations

import collections
import os
import re
import tomllib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import common, faster_rcnn, mask_rcnn, yolov3  # noqa: E402

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def yolo_full():
    m = yolov3.build("full")
    yield m
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def yolo_tiny():
    m = yolov3.build("tiny")
    yield m
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def frcnn_full():
    m = faster_rcnn.build("full")
    yield m
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def frcnn_tiny():
    m = faster_rcnn.build("tiny")
    yield m
    keras.backend.clear_session()


@pytest.fixture(scope="module")
def mrcnn_tiny():
    m = mask_rcnn.build("tiny")
    yield m
    keras.backend.clear_session()


def _images(cfg_size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, cfg_size, cfg_size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def frcnn_out(frcnn_tiny):
    cfg = frcnn_tiny.keras_model.rcnn_config
    return {k: v.numpy() for k, v in frcnn_tiny.serve(tf.constant(_images(cfg.size))).items()}


@pytest.fixture(scope="module")
def mrcnn_out(mrcnn_tiny):
    cfg = mrcnn_tiny.keras_model.rcnn_config
    return {k: v.numpy() for k, v in mrcnn_tiny.serve(tf.constant(_images(cfg.size))).items()}


# ------------------------------------------------------------------ YOLOv3


def test_darknet53_has_23_residual_blocks_in_stages_1_2_8_8_4(yolo_full):
    model = yolo_full.keras_model
    per_stage = collections.Counter()
    for layer in model.layers:
        m = re.fullmatch(r"darknet_s(\d)_res(\d+)_add", layer.name)
        if m:
            assert isinstance(layer, keras.layers.Add)
            per_stage[int(m.group(1))] += 1
    assert [per_stage[s] for s in range(1, 6)] == [1, 2, 8, 8, 4]
    assert sum(per_stage.values()) == 23
    # each block: 1x1 conv to c/2 then 3x3 conv back to c; each stage opens with a stride-2 3x3 conv
    for s in range(1, 6):
        c = 64 << (s - 1)
        down = model.get_layer(f"darknet_s{s}_down_conv")
        assert down.strides == (2, 2) and down.kernel_size == (3, 3) and down.filters == c
        a = model.get_layer(f"darknet_s{s}_res1_a_conv")
        b = model.get_layer(f"darknet_s{s}_res1_b_conv")
        assert (a.kernel_size, a.filters) == ((1, 1), c // 2)
        assert (b.kernel_size, b.filters) == ((3, 3), c)
    # conv + BN + LeakyReLU(0.1) everywhere in the backbone
    leaky = [l for l in model.layers if isinstance(l, keras.layers.LeakyReLU)]
    assert leaky and all(abs(l.negative_slope - 0.1) < 1e-9 for l in leaky)
    # 52 convs in Darknet-53 without its final classifier: stem + 5 downsamples + 2 * 23
    backbone_convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.name.startswith("darknet_")]
    assert len(backbone_convs) == 1 + 5 + 2 * 23


def test_yolov3_full_three_scales_52_26_13_with_255_channels(yolo_full):
    model = yolo_full.keras_model
    assert {k: tuple(v.shape) for k, v in model.output.items()} == {
        "grid_s8": (None, 52, 52, 255),
        "grid_s16": (None, 26, 26, 255),
        "grid_s32": (None, 13, 13, 255),
    }
    heads = [l for l in model.layers if l.name.startswith("yolo_grid_s")]
    assert len(heads) == 3
    for h in heads:
        assert h.kernel_size == (1, 1) and h.filters == 3 * (5 + 80) and h.use_bias
    assert len([l for l in model.layers if isinstance(l, keras.layers.UpSampling2D)]) == 2
    assert len([l for l in model.layers if isinstance(l, keras.layers.Concatenate)]) == 2


def test_yolov3_full_parameter_count(yolo_full):
    # The 80-class, 416x416 YOLOv3 (darknet yolov3.cfg / yolov3.weights) is widely
    # quoted at 61.9M parameters (e.g. the model card of the darknet-weights port at
    # huggingface.co/lucid-dl/yolo-v3); ours: 61,949,149 trainable + 52,608 BN statistics.
    n = yolo_full.keras_model.count_params()
    assert abs(n - 61.9e6) / 61.9e6 < 0.05, n


def test_yolov3_full_spec(yolo_full):
    spec = yolo_full.spec
    assert spec["task"] == "detect_yolo" and spec["architecture"] == "YOLOv3"
    assert len(spec["labels"]) == 80 and spec["labels"][0] == "person" and spec["labels"][-1] == "toothbrush"
    out = spec["output"]
    assert out["anchors"] == [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
    assert out["anchor_masks"] == list(range(9))
    assert out["grids"] == ["grid_s8", "grid_s16", "grid_s32"] and out["strides"] == [8, 16, 32]
    assert spec["input"]["height"] == spec["input"]["width"] == 416
    assert spec["input"]["resize"] == "letterbox"


@pytest.mark.parametrize("batch", [1, 3])
def test_yolov3_tiny_serve_raw_grids(yolo_tiny, batch):
    size = yolo_tiny.spec["input"]["height"]
    c = len(yolo_tiny.spec["labels"])
    out = yolo_tiny.serve(tf.constant(_images(size, batch)))
    assert sorted(out) == ["grid_s16", "grid_s32", "grid_s8"]
    for s in (8, 16, 32):
        g = out[f"grid_s{s}"].numpy()
        assert g.shape == (batch, size // s, size // s, 3 * (5 + c))
        assert np.all(np.isfinite(g)) and g.std() > 0
    # raw (no sigmoid): values outside [0, 1] occur
    assert min(float(tf.reduce_min(v)) for v in out.values()) < 0
    anchors = yolo_tiny.spec["output"]["anchors"]
    assert len(anchors) == 18 and all(isinstance(a, int) and a >= 1 for a in anchors)


def test_yolov3_tiny_keeps_topology(yolo_full, yolo_tiny):
    def kinds(model):
        return [(type(l).__name__, re.sub(r"\d+$", "", l.name)) for l in model.layers]

    assert kinds(yolo_full.keras_model) == kinds(yolo_tiny.keras_model)


# ------------------------------------------------------------------ Faster R-CNN: anchors, decode, RPN


def _np_decode(anchors, deltas, stds=(1.0, 1.0, 1.0, 1.0)):
    """Independent numpy reference of the (dy, dx, dh, dw) box parametrisation."""
    anchors = np.asarray(anchors, np.float64)
    d = np.asarray(deltas, np.float64) * np.asarray(stds)
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    cy = anchors[..., 0] + ha / 2 + d[..., 0] * ha
    cx = anchors[..., 1] + wa / 2 + d[..., 1] * wa
    h = ha * np.exp(np.minimum(d[..., 2], np.log(1000 / 16)))
    w = wa * np.exp(np.minimum(d[..., 3], np.log(1000 / 16)))
    return np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)


@pytest.mark.parametrize("stds", [(1.0, 1.0, 1.0, 1.0), faster_rcnn.RCNN_DELTA_STDS])
def test_delta_decode_matches_numpy_reference(stds):
    rng = np.random.default_rng(1)
    anchors = faster_rcnn.generate_anchors(faster_rcnn.TINY)
    deltas = rng.normal(0, 1.5, anchors.shape).astype(np.float32)
    deltas[:5, 2:] = 9.0  # exercises the log(1000/16) clip
    got = faster_rcnn.decode_deltas(anchors, deltas, stds).numpy()
    np.testing.assert_allclose(got, _np_decode(anchors, deltas, stds), rtol=1e-5, atol=1e-5)
    # zero deltas are the identity
    np.testing.assert_allclose(faster_rcnn.decode_deltas(anchors, np.zeros_like(anchors)).numpy(), anchors, atol=1e-6)


@pytest.mark.parametrize("cfg", [faster_rcnn.TINY, faster_rcnn.FULL], ids=["tiny", "full"])
def test_anchor_generation(cfg):
    a = faster_rcnn.generate_anchors(cfg).astype(np.float64) * cfg.size
    n, k = cfg.feat_size, cfg.num_anchors
    assert k == 9 and a.shape == (n * n * k, 4)
    a = a.reshape(n, n, k, 4)
    h, w = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    scales = np.repeat(cfg.anchor_scales, len(cfg.anchor_ratios))
    ratios = np.tile(cfg.anchor_ratios, len(cfg.anchor_scales))
    np.testing.assert_allclose(np.sqrt(h * w), np.broadcast_to(scales, h.shape), rtol=1e-5)
    np.testing.assert_allclose(h / w, np.broadcast_to(ratios, h.shape), rtol=1e-5)
    cy = (a[..., 0] + a[..., 2]) / 2
    cx = (a[..., 1] + a[..., 3]) / 2
    np.testing.assert_allclose(cy[:, 0, 0], (np.arange(n) + 0.5) * cfg.feat_stride, atol=1e-3)
    np.testing.assert_allclose(cx[0, :, 0], (np.arange(n) + 0.5) * cfg.feat_stride, atol=1e-3)


@pytest.mark.parametrize("which", ["tiny", "full"])
def test_rpn_heads_have_2A_and_4A_channels(which, frcnn_tiny, frcnn_full):
    m = {"tiny": frcnn_tiny, "full": frcnn_full}[which].keras_model
    cfg = m.rcnn_config
    a = cfg.num_anchors
    conv = m.get_layer("rpn_conv")
    cls = m.get_layer("rpn_cls_logits")
    box = m.get_layer("rpn_bbox_deltas")
    assert conv.kernel_size == (3, 3)
    assert cls.kernel_size == (1, 1) and cls.filters == 2 * a
    assert box.kernel_size == (1, 1) and box.filters == 4 * a
    assert tuple(cls.output.shape) == (None, cfg.feat_size, cfg.feat_size, 2 * a)
    assert tuple(box.output.shape) == (None, cfg.feat_size, cfg.feat_size, 4 * a)
    c = cfg.num_classes
    assert m.get_layer("cls_score").units == c + 1
    assert m.get_layer("bbox_pred").units == 4 * c
    assert isinstance(m.get_layer("cls_prob"), keras.layers.Softmax)


def test_faster_rcnn_full_is_vgg16(frcnn_full):
    m = frcnn_full.keras_model
    convs = [l for l in m.layers if re.fullmatch(r"block\d_conv\d", l.name)]
    assert [l.filters for l in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert m.get_layer("fc6").units == m.get_layer("fc7").units == 4096
    assert m.rcnn_config.num_classes == 80
    assert tuple(m.output["detection_boxes"].shape) == (None, 100, 4)
    # VGG-16 conv layers (14.7M) + RPN + fc6/fc7 (~119.6M) + COCO heads
    assert 130e6 < m.count_params() < 145e6


# ------------------------------------------------------------------ Faster R-CNN: outputs


def test_faster_rcnn_tiny_outputs_od_api_layout(frcnn_tiny, frcnn_out):
    cfg = frcnn_tiny.keras_model.rcnn_config
    b, m = 2, cfg.max_detections
    boxes, scores = frcnn_out["detection_boxes"], frcnn_out["detection_scores"]
    classes, num = frcnn_out["detection_classes"], frcnn_out["num_detections"]
    assert boxes.shape == (b, m, 4) and scores.shape == (b, m) and classes.shape == (b, m) and num.shape == (b,)
    assert all(v.dtype == np.float32 for v in frcnn_out.values())
    assert np.all(num <= m) and np.all(num > 0), num  # random weights still detect something
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    assert np.all(boxes[..., 0] <= boxes[..., 2]) and np.all(boxes[..., 1] <= boxes[..., 3])
    for i in range(b):
        n = int(num[i])
        assert num[i] == n
        s = scores[i, :n]
        assert np.all(np.diff(s) <= 0), s
        assert np.all(s >= cfg.score_threshold)
        c = classes[i, :n]
        assert np.all(c == np.round(c)) and c.min() >= 1 and c.max() <= cfg.num_classes
        assert np.all(scores[i, n:] == 0) and np.all(boxes[i, n:] == 0)


def _iou(a, b):
    y1, x1 = np.maximum(a[0], b[0]), np.maximum(a[1], b[1])
    y2, x2 = np.minimum(a[2], b[2]), np.minimum(a[3], b[3])
    inter = max(0.0, y2 - y1) * max(0.0, x2 - x1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_per_class_nms_suppresses(frcnn_tiny, frcnn_out):
    thr = frcnn_tiny.keras_model.rcnn_config.nms_iou
    checked = 0
    for i in range(len(frcnn_out["num_detections"])):
        n = int(frcnn_out["num_detections"][i])
        boxes, classes = frcnn_out["detection_boxes"][i, :n], frcnn_out["detection_classes"][i, :n]
        for p in range(n):
            for q in range(p + 1, n):
                if classes[p] == classes[q]:
                    checked += 1
                    assert _iou(boxes[p], boxes[q]) <= thr + 1e-5, (i, p, q)
    assert checked > 0


def test_per_class_nms_would_suppress_without_it(frcnn_tiny):
    """The candidates before NMS do overlap above the threshold, so the test above is meaningful."""
    m = frcnn_tiny.keras_model
    cfg = m.rcnn_config
    sub = keras.Model(m.input, [m.get_layer("proposals").output[0], m.get_layer("proposals").output[1]])
    proposals, valid = (np.asarray(t) for t in sub(_images(cfg.size)))
    n = int(valid[0].sum())
    assert n > 1
    ious = [_iou(proposals[0, p], proposals[0, q]) for p in range(min(n, 40)) for q in range(p + 1, min(n, 40))]
    assert max(ious) > cfg.nms_iou
    assert max(ious) <= cfg.rpn_nms_iou + 1e-5  # the RPN's own NMS


def test_faster_rcnn_is_batch_independent(frcnn_tiny, frcnn_out):
    cfg = frcnn_tiny.keras_model.rcnn_config
    one = frcnn_tiny.serve(tf.constant(_images(cfg.size)[1:2]))
    for k, v in one.items():
        np.testing.assert_allclose(v.numpy()[0], frcnn_out[k][1], atol=1e-5, err_msg=k)


# ------------------------------------------------------------------ Mask R-CNN


def test_mask_rcnn_masks(mrcnn_tiny, mrcnn_out):
    cfg = mrcnn_tiny.keras_model.rcnn_config
    masks = mrcnn_out["detection_masks"]
    assert masks.shape == (2, cfg.max_detections, mask_rcnn.MASK_SIZE, mask_rcnn.MASK_SIZE)
    assert masks.dtype == np.float32
    assert np.all(masks >= 0) and np.all(masks <= 1) and masks.std() > 0
    assert set(mrcnn_out) == set(mask_rcnn.OUTPUT_KEYS)
    assert np.all(mrcnn_out["num_detections"] > 0)


def test_mask_rcnn_mask_head_layers(mrcnn_tiny):
    m = mrcnn_tiny.keras_model
    deconv = [l for l in m.layers if isinstance(l, keras.layers.Conv2DTranspose)]
    assert len(deconv) == 1 and deconv[0].kernel_size == (2, 2) and deconv[0].strides == (2, 2)
    convs = [m.get_layer(f"mask_conv{i}") for i in range(1, 5)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    logits = m.get_layer("mask_logits")
    assert logits.kernel_size == (1, 1) and logits.filters == m.rcnn_config.num_classes
    assert tuple(logits.output.shape[1:]) == (28, 28, m.rcnn_config.num_classes)
    # Faster R-CNN reused, with RoIAlign-style pooling in the box head
    assert m.rcnn_config.roi_op == "align"
    for name in ("rpn_conv", "rpn_cls_logits", "rpn_bbox_deltas", "proposals", "roi_pool", "fc6", "fc7",
                 "cls_score", "bbox_pred", "detections"):
        m.get_layer(name)


def test_mask_rcnn_selects_each_detections_class_mask(mrcnn_tiny, mrcnn_out):
    m = mrcnn_tiny.keras_model
    cfg = m.rcnn_config
    sub = keras.Model(m.input, [m.get_layer("mask_logits").output, m.output["detection_classes"]])
    all_masks, classes = (np.asarray(t) for t in sub(_images(cfg.size)))
    b, n = classes.shape
    all_masks = all_masks.reshape(b, n, 28, 28, cfg.num_classes)
    want = np.take_along_axis(all_masks, (classes.astype(int) - 1)[:, :, None, None, None], axis=-1)[..., 0]
    np.testing.assert_allclose(mrcnn_out["detection_masks"], want, atol=1e-6)


def test_mask_rcnn_spec(mrcnn_tiny):
    out = mrcnn_tiny.spec["output"]
    assert mrcnn_tiny.spec["task"] == "detect_rcnn"
    assert out["masks"] == "detection_masks" and out["label_offset"] == 1


# ------------------------------------------------------------------ export round trip


@pytest.mark.parametrize("which", ["yolo", "frcnn", "mrcnn"])
def test_export_tiny_roundtrip(which, tmp_path, yolo_tiny, frcnn_tiny, mrcnn_tiny):
    m = {"yolo": yolo_tiny, "frcnn": frcnn_tiny, "mrcnn": mrcnn_tiny}[which]
    path = common.export(m, str(tmp_path))
    for f in ("saved_model.pb", "edgeinfer.toml", "variables/variables.index", "golden/input_images.npy"):
        assert os.path.exists(os.path.join(path, f)), f
    with open(os.path.join(path, "edgeinfer.toml"), "rb") as f:
        spec = tomllib.load(f)
    assert spec == m.spec
    loaded = tf.saved_model.load(path).signatures[common.SIGNATURE]
    sig = loaded.structured_input_signature[1]["images"]
    assert sig.shape.as_list()[0] is None and sig.dtype == tf.float32
    x = np.load(os.path.join(path, "golden", "input_images.npy"))
    direct = m.serve(tf.constant(x))
    for k, v in direct.items():
        g = np.load(os.path.join(path, "golden", f"output_{k}.npy"))
        np.testing.assert_allclose(g, v.numpy(), atol=1e-5, err_msg=k)
    if which == "yolo":
        assert sorted(spec["output"]["grids"]) == sorted(direct)
    else:
        assert np.all(np.load(os.path.join(path, "golden", "output_num_detections.npy")) > 0)
