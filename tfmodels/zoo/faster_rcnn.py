"""Faster R-CNN (Ren, He, Girshick & Sun, NIPS 2015), test-time graph.

    images -> VGG-16 conv backbone (conv1_1 .. conv5_3, stride 16)
           -> RPN: 3x3 conv (ReLU) + two sibling 1x1 convs per position:
                   2A objectness logits (per anchor a pair (background, foreground),
                   softmax over the pair) and 4A box deltas (per anchor dy, dx, dh, dw)
           -> anchors (A = 3 scales x 3 aspect ratios at every stride-16 position),
              delta decoding, clipping to the image, small-box removal,
              top-N (pre-NMS), NMS (IoU 0.7), top-N (post-NMS) proposals
           -> RoI pooling to 7x7 (see ROI POOLING below)
           -> fc6 (4096) -> fc7 (4096) -> cls_score (C+1, softmax)
                                      -> bbox_pred (4C, class-specific deltas)
           -> class-specific decode, clipping, per-class NMS, top-M detections

The trainable network and the post-processing form ONE Keras functional
model: the non-trainable steps (proposals, RoI pooling, detection output) are
Keras Layers wrapping plain TensorFlow ops (CombinedNonMaxSuppression,
CropAndResize, TopKV2, ...), all deterministic on CPU.

Boxes are normalised (ymin, xmin, ymax, xmax) in [0, 1] throughout, as in the
TensorFlow Object Detection (OD) API. Delta parametrisation is the paper's
(t_y = (y - y_a) / h_a, t_h = log(h / h_a), ...), ordered (dy, dx, dh, dw); the
second stage divides by the usual target stds (0.1, 0.1, 0.2, 0.2) as
py-faster-rcnn does; dh/dw are clipped at log(1000/16) before exp.

ROI POOLING: tf.image.crop_and_resize of each proposal to 2s x 2s on the
feature map followed by a 2x2 stride-2 max pooling ("pool", RoIPool as in the
paper, up to bilinear sampling) or average pooling ("align", RoIAlign with 2x2
sampling points per bin, used by Mask R-CNN).

SIGNATURE (serving_default), following the OD API so TF2 Detection Model Zoo
exports fit the same edgeinfer plugin:
    input  "images"            float32 [batch, H, W, 3], RGB in [0, 1]
                               (our zoo choice; the OD API itself takes uint8
                               "input_tensor"), stretched to H x W
    output "detection_boxes"   float32 [batch, M, 4] normalised ymin, xmin, ymax, xmax
           "detection_scores"  float32 [batch, M] descending
           "detection_classes" float32 [batch, M] 1-based class ids (label = labels[c-1])
           "num_detections"    float32 [batch]
Slots past num_detections are padding (boxes 0, scores 0, classes 1: the OD API
adds its label offset to every slot, padding included).

Variants:
  full: 600x600 input (the paper's 600-pixel short side, as a fixed square),
        VGG-16 backbone (the paper's large model), 80 COCO classes, anchor
        scales 128/256/512, 6000 pre-NMS / 300 post-NMS proposals, 100 detections.
  tiny: 128x128, every VGG-16 conv and pool kept with channels / 16, fc 256,
        3 classes, anchor scales scaled by 128/600, 20 detections, score
        threshold 0.05 so random weights still give detections.
Weights are random (seeded, He-normal): this is an architecture export.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfmodels.zoo import common
from tfmodels.zoo.yolov3 import COCO_LABELS

BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)
RCNN_DELTA_STDS = (0.1, 0.1, 0.2, 0.2)
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convs)


@dataclasses.dataclass(frozen=True)
class RCNNConfig:
    size: int
    width_div: int
    labels: tuple
    anchor_scales: tuple  # anchor side (sqrt of area) in input pixels
    anchor_ratios: tuple = (0.5, 1.0, 2.0)  # height / width
    feat_stride: int = 16
    rpn_channels: int = 512
    rpn_min_size: int = 16  # proposals smaller than this (input pixels) are dropped
    pre_nms_top_n: int = 6000
    post_nms_top_n: int = 300
    rpn_nms_iou: float = 0.7
    pool_size: int = 7
    roi_op: str = "pool"  # "pool" (RoIPool, max) or "align" (RoIAlign-style, average)
    fc_units: int = 4096
    score_threshold: float = 0.05
    nms_iou: float = 0.3
    max_per_class: int = 100
    max_detections: int = 100

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @property
    def feat_size(self) -> int:
        # four 2x2/2 VALID max pools
        s = self.size
        for _ in range(4):
            s //= 2
        return s


FULL = RCNNConfig(size=600, width_div=1, labels=tuple(COCO_LABELS), anchor_scales=(128, 256, 512))
TINY = RCNNConfig(
    size=128, width_div=16, labels=("person", "bicycle", "car"),
    anchor_scales=tuple(int(round(s * 128 / 600)) for s in (128, 256, 512)),
    rpn_channels=512 // 16, rpn_min_size=4, pre_nms_top_n=6000, post_nms_top_n=300,
    fc_units=4096 // 16, max_per_class=20, max_detections=20)
CONFIGS = {"full": FULL, "tiny": TINY}


# ---------------------------------------------------------------- anchors and deltas


def generate_anchors(cfg: RCNNConfig) -> np.ndarray:
    """[h*w*A, 4] normalised (ymin, xmin, ymax, xmax); order: row, column, then
    anchor (scale-major, ratio-minor), matching a reshape of the RPN's
    [batch, h, w, A*k] outputs to [batch, h*w*A, k]."""
    base = []
    for s in cfg.anchor_scales:
        for r in cfg.anchor_ratios:
            base.append((s * math.sqrt(r), s / math.sqrt(r)))  # (height, width), area s^2
    base = np.asarray(base, np.float64)  # [A, 2]
    n = cfg.feat_size
    c = (np.arange(n, dtype=np.float64) + 0.5) * cfg.feat_stride
    cy, cx = np.meshgrid(c, c, indexing="ij")
    cy, cx = cy[:, :, None], cx[:, :, None]
    h, w = base[None, None, :, 0], base[None, None, :, 1]
    a = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1) / cfg.size
    return a.reshape(-1, 4).astype(np.float32)


def decode_deltas(anchors, deltas, stds=(1.0, 1.0, 1.0, 1.0)):
    """Applies (dy, dx, dh, dw) deltas to (ymin, xmin, ymax, xmax) boxes (TF ops, broadcasting)."""
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    deltas = tf.convert_to_tensor(deltas, tf.float32) * tf.constant(stds, tf.float32)
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    cya = anchors[..., 0] + 0.5 * ha
    cxa = anchors[..., 1] + 0.5 * wa
    dy, dx, dh, dw = tf.unstack(deltas, axis=-1)
    dh = tf.minimum(dh, BBOX_XFORM_CLIP)
    dw = tf.minimum(dw, BBOX_XFORM_CLIP)
    cy = dy * ha + cya
    cx = dx * wa + cxa
    h = tf.exp(dh) * ha
    w = tf.exp(dw) * wa
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def clip_boxes(boxes):
    return tf.clip_by_value(boxes, 0.0, 1.0)


# ---------------------------------------------------------------- post-processing layers


class ProposalLayer(layers.Layer):
    """RPN outputs -> [batch, post_nms_top_n, 4] proposals (zero-padded) and a
    [batch, post_nms_top_n] validity mask (1.0 for real proposals)."""

    def __init__(self, cfg: RCNNConfig, anchors: np.ndarray, **kw):
        super().__init__(**kw)
        self.cfg = cfg
        self.anchors = anchors

    def call(self, inputs):
        cls_logits, deltas = inputs
        cfg = self.cfg
        b = tf.shape(cls_logits)[0]
        k = self.anchors.shape[0]
        fg = tf.nn.softmax(tf.reshape(cls_logits, [b, k, 2]), axis=-1)[..., 1]
        boxes = clip_boxes(decode_deltas(self.anchors[None], tf.reshape(deltas, [b, k, 4])))
        # min-size filter (RPN_MIN_SIZE): drop by giving a negative score
        min_h = cfg.rpn_min_size / cfg.size
        big = tf.logical_and(boxes[..., 2] - boxes[..., 0] >= min_h, boxes[..., 3] - boxes[..., 1] >= min_h)
        fg = tf.where(big, fg, -1.0)
        top_n = min(cfg.pre_nms_top_n, k)
        scores, idx = tf.math.top_k(fg, k=top_n, sorted=True)
        boxes = tf.gather(boxes, idx, batch_dims=1)
        out = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores[:, :, None],
            max_output_size_per_class=cfg.post_nms_top_n, max_total_size=cfg.post_nms_top_n,
            iou_threshold=cfg.rpn_nms_iou, score_threshold=0.0, pad_per_class=False, clip_boxes=False)
        n = cfg.post_nms_top_n
        valid = tf.cast(tf.range(n)[None, :] < out.valid_detections[:, None], tf.float32)
        return tf.reshape(out.nmsed_boxes, [-1, n, 4]), tf.reshape(valid, [-1, n])


def roi_crop(features, boxes, crop: int, pool: str | None):
    """boxes [batch, N, 4] -> [batch*N, s, s, C] crops (s = crop, or crop/2 after 2x2 pooling)."""
    b = tf.shape(boxes)[0]
    n = boxes.shape[1]
    flat = tf.reshape(boxes, [-1, 4])
    ind = tf.repeat(tf.range(b), n)
    crops = tf.image.crop_and_resize(features, flat, ind, [crop, crop], method="bilinear")
    if pool == "max":
        crops = tf.nn.max_pool2d(crops, 2, 2, "VALID")
    elif pool == "avg":
        crops = tf.nn.avg_pool2d(crops, 2, 2, "VALID")
    return crops


class RoIPooling(layers.Layer):
    """[features, proposals [batch, N, 4]] -> [batch, N, s*s*C] pooled, flattened RoIs."""

    def __init__(self, pool_size: int, mode: str = "pool", **kw):
        super().__init__(**kw)
        self.pool_size = pool_size
        self.mode = mode

    def call(self, inputs):
        features, boxes = inputs
        n = boxes.shape[1]
        crops = roi_crop(features, boxes, 2 * self.pool_size, "max" if self.mode == "pool" else "avg")
        c = features.shape[-1]
        return tf.reshape(crops, [-1, n, self.pool_size * self.pool_size * c])


class DetectionLayer(layers.Layer):
    """Class-specific decode, clip, per-class NMS, top-M; OD API output dict."""

    def __init__(self, cfg: RCNNConfig, **kw):
        super().__init__(**kw)
        self.cfg = cfg

    def call(self, inputs):
        proposals, valid, probs, deltas = inputs
        cfg = self.cfg
        c = cfg.num_classes
        n = proposals.shape[1]
        deltas = tf.reshape(deltas, [-1, n, c, 4])
        boxes = clip_boxes(decode_deltas(proposals[:, :, None, :], deltas, RCNN_DELTA_STDS))
        scores = probs[..., 1:] * valid[..., None]  # background column dropped, padding zeroed
        out = tf.image.combined_non_max_suppression(
            boxes, scores, max_output_size_per_class=cfg.max_per_class,
            max_total_size=cfg.max_detections, iou_threshold=cfg.nms_iou,
            score_threshold=cfg.score_threshold, pad_per_class=False, clip_boxes=False)
        m = cfg.max_detections
        return {
            "detection_boxes": tf.reshape(out.nmsed_boxes, [-1, m, 4]),
            "detection_scores": tf.reshape(out.nmsed_scores, [-1, m]),
            "detection_classes": tf.reshape(out.nmsed_classes, [-1, m]) + 1.0,  # OD API label_id_offset
            "num_detections": tf.cast(out.valid_detections, tf.float32),
        }


# ---------------------------------------------------------------- network


def vgg16_backbone(x, div: int = 1):
    """VGG-16 conv1_1 .. conv5_3 (13 convs, 4 max pools; pool5 is replaced by RoI pooling)."""
    for bi, (ch, n) in enumerate(VGG16_BLOCKS, start=1):
        for ci in range(1, n + 1):
            x = layers.Conv2D(ch // div, 3, padding="same", activation="relu",
                              kernel_initializer="he_normal", name=f"block{bi}_conv{ci}")(x)
        if bi < 5:
            x = layers.MaxPooling2D(2, 2, name=f"block{bi}_pool")(x)
    return x


def _fan_in(scale: float):
    """Output-layer init keeping random logits / deltas O(1) (distinct scores, sane boxes)."""
    return keras.initializers.VarianceScaling(scale, mode="fan_in", distribution="truncated_normal")


def rpn(features, cfg: RCNNConfig):
    a = cfg.num_anchors
    x = layers.Conv2D(cfg.rpn_channels, 3, padding="same", activation="relu",
                      kernel_initializer="he_normal", name="rpn_conv")(features)
    cls = layers.Conv2D(2 * a, 1, kernel_initializer=_fan_in(0.5),
                        name="rpn_cls_logits")(x)
    deltas = layers.Conv2D(4 * a, 1, kernel_initializer=_fan_in(0.05),
                           name="rpn_bbox_deltas")(x)
    return cls, deltas


def box_head(pooled, cfg: RCNNConfig):
    x = layers.Dense(cfg.fc_units, activation="relu", kernel_initializer="he_normal", name="fc6")(pooled)
    x = layers.Dropout(0.5, name="fc6_dropout")(x)
    x = layers.Dense(cfg.fc_units, activation="relu", kernel_initializer="he_normal", name="fc7")(x)
    x = layers.Dropout(0.5, name="fc7_dropout")(x)
    logits = layers.Dense(cfg.num_classes + 1, kernel_initializer=_fan_in(0.5),
                          name="cls_score")(x)
    probs = layers.Softmax(name="cls_prob")(logits)
    deltas = layers.Dense(4 * cfg.num_classes, kernel_initializer=_fan_in(0.5),
                          name="bbox_pred")(x)
    return probs, deltas


def build_graph(cfg: RCNNConfig):
    """Returns (input, dict of output tensors incl. the backbone feature map under "features")."""
    inp = keras.Input((cfg.size, cfg.size, 3), name="images")
    feats = vgg16_backbone(inp, cfg.width_div)
    cls, deltas = rpn(feats, cfg)
    proposals, valid = ProposalLayer(cfg, generate_anchors(cfg), name="proposals")([cls, deltas])
    pooled = RoIPooling(cfg.pool_size, cfg.roi_op, name="roi_pool")([feats, proposals])
    probs, box_deltas = box_head(pooled, cfg)
    dets = DetectionLayer(cfg, name="detections")([proposals, valid, probs, box_deltas])
    return inp, dict(dets, features=feats)


DETECTION_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def rcnn_spec(cfg: RCNNConfig, architecture: str, variant: str, masks: bool = False) -> dict:
    out = {"boxes": "detection_boxes", "scores": "detection_scores", "classes": "detection_classes",
           "num_detections": "num_detections"}
    if masks:
        out["masks"] = "detection_masks"
    out["label_offset"] = 1
    return {
        "task": "detect_rcnn",
        "architecture": architecture,
        "variant": variant,
        "signature": common.SIGNATURE,
        "labels": list(cfg.labels),
        "input": {
            "key": "images", "height": cfg.size, "width": cfg.size, "channels": 3, "layout": "NHWC",
            "dtype": "float32", "resize": "stretch", "scale": 1.0 / 255.0,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        },
        "output": out,
    }


def make_exportable(name: str, model: keras.Model, cfg: RCNNConfig, keys, spec: dict) -> common.Exportable:
    def fn(images):
        out = model(images, training=False)
        return {k: out[k] for k in keys}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, cfg.size, cfg.size, 3], tf.float32)})
    return common.Exportable(name=name, keras_model=model, serve=serve, spec=spec)


def build(variant: str = "tiny", seed: int = 0) -> common.Exportable:
    cfg = CONFIGS[variant]
    keras.utils.set_random_seed(seed)
    inp, out = build_graph(cfg)
    model = keras.Model(inp, {k: out[k] for k in DETECTION_KEYS}, name="faster_rcnn")
    model.rcnn_config = cfg
    return make_exportable("faster_rcnn", model, cfg, DETECTION_KEYS,
                           rcnn_spec(cfg, "Faster R-CNN", variant))
