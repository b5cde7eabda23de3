"""Trains the tiny Faster R-CNN and Mask R-CNN on the generated shapes set
(shapes.py) and exports them into a model repository, cached outside the clone.

    python -m tfmodels.zoo.train_rcnn --out models [shapes_faster_rcnn] [shapes_mask_rcnn]

With no names both are made. A trained version directory is cached in
${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/<name>-<key>/ (its metrics next to
it in <name>-<key>.json), key = the first 16 hex digits of a sha256 over
shapes.py, this file, faster_rcnn.py, mask_rcnn.py, common.py, layers.py and
the TensorFlow version; it is copied into <out>/<name>/1 (temporary name, then
rename), or trained first when missing. `--retrain` replaces the cached
versions; `--smoke` trains a few steps only (a pipeline check, cached under its
own key). Training is deterministic (seeded, TF op determinism): the same key
gives bit-identical weights.

MODELS (the zoo's tiny topologies built by faster_rcnn.build_graph and
mask_rcnn.mask_head, unchanged; only the labels are shapes.CLASSES):
  shapes_faster_rcnn  faster_rcnn.TINY: 128x128, VGG-16 with widths / 16, RPN
                      (9 anchors, scales 27/55/109 px), RoIPool 7x7, fc 256.
  shapes_mask_rcnn    mask_rcnn.CONFIGS["tiny"]: the same with RoIAlign-style
                      (average) pooling, plus the 28x28 mask head.

RECIPE (about 8 minutes on two idle cores; measured times are in the .json):
  data      4000 images of shapes.generate(4000, 128, seed 0), random horizontal flips.
  stage 1   Faster R-CNN from scratch (He init): 2500 steps of 8 images, Adam,
            lr 4e-3 (100 warm-up steps, cosine decay), global-norm clipping 10.
  stage 2   Mask R-CNN initialised from stage 1 (backbone, RPN, box head copied by
            layer name; the box head adapts from max to average RoI pooling) with
            block1-3 frozen: 1000 steps of 8 images, lr 3e-3 (50 warm-up steps).
  The two exports share nothing at run time; stage 2 changes Mask R-CNN's
  block4-5, RPN and box head.

TRAINING STEP (approximate joint training: one tf.GradientTape over RPN and
heads; proposals are not differentiated through; fc6/fc7 dropout is off):
  RPN targets   every anchor (boundary-crossing ones included: at 128x128 most
                large anchors cross it); IoU >= 0.7 with a gt box, or the best
                anchor(s) of a gt box -> positive, IoU < 0.3 -> negative, else
                ignored; 256 sampled per image, at most half positive.
  RPN losses    2-way softmax cross-entropy (= the objectness BCE) over the sampled
                anchors + smooth-L1 (beta 1/9) on the positives' (dy, dx, dh, dw),
                both divided by the number of sampled anchors (py-faster-rcnn).
  RoI sampling  the RPN's proposals (the export graph's ProposalLayer: top-N, NMS
                0.7, 300) plus the gt boxes; IoU >= 0.5 -> foreground (class of the
                best gt), else background; 64 RoIs per image, at most 25%
                foreground, foreground first.
  head losses   softmax cross-entropy over C+1 + smooth-L1 (beta 1) on the gt
                class's deltas divided by RCNN_DELTA_STDS, over the foreground,
                both divided by the number of sampled RoIs.
  mask loss     per-pixel sigmoid BCE of the gt class's 28x28 logits against the
                matched gt mask cropped and resized by the RoI (bilinear, >= 0.5),
                averaged over the first MASK_ROIS (8) foreground RoIs per image.
Trainer also trains several exports on one shared backbone at once (a list of
models); the recipe does not use that (stage 1 alone is cheaper per step, and
reached a higher box mAP than joint training in the same time).

MASK CONVENTION (training targets and evaluation paste are inverses): cell
(i, j) of a 28x28 box-relative mask is centred at box-relative ((i + .5) / 28,
(j + .5) / 28); pasting samples it bilinearly (edge-clamped) at each image
pixel centre in [x1, x2) x [y1, y2), zero elsewhere, threshold 0.5 (as the
detect plugin does, see detect_ref.paste_mask).

EVALUATION on 300 held-out images (shapes seed 1) through the exported, reloaded
SavedModel's OD API outputs (no extra score threshold: the model's own 0.05):
box AP@0.5 per class (VOC matching, all-points interpolation; equal to
detect_ref.mean_ap(..., "all", "voc")), its mean over the classes ("map50"),
and the mean mask IoU of the true-positive detections ("mask_iou"; also
"mask_iou_score05" over those with score >= 0.5).

EXTRA GOLDEN FILES (besides golden/input_images.npy = the first 4 held-out
images * 1/255, as the plugin feeds them, and the outputs for them):
  golden/shapes_images.npy   uint8 [50, 128, 128, 3], the first 50 held-out images
  golden/shapes_labels.json  {"labels", "box_format", "count" [50], "classes" [50][n]
                              (0-based index into labels), "boxes" [50][n][4]
                              (x1, y1, x2, y2 pixels, x2/y2 exclusive)}
  golden/shapes_masks.npy    bool [50, 4, 128, 128]: image i's masks are [i, :count[i]]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common, faster_rcnn, mask_rcnn

NAMES = ("shapes_faster_rcnn", "shapes_mask_rcnn")
SIZE = 128
MAX_OBJECTS = 4  # shapes.generate draws 1-4 shapes per image
N_GOLDEN = 50
N_EVAL = 300
TRAIN_SEED, EVAL_SEED = 0, 1
VERSION = 1

RPN_BATCH, RPN_POS_FRACTION, RPN_POS_IOU, RPN_NEG_IOU = 256, 0.5, 0.7, 0.3
ROI_BATCH, ROI_FG_FRACTION, ROI_FG_IOU = 64, 0.25, 0.5
RPN_BETA, HEAD_BETA = 1.0 / 9.0, 1.0
MASK_ROIS = 8  # foreground RoIs per image the mask loss sees (the first of the sampled foreground)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training stage."""

    steps: int
    lr: float  # Adam peak learning rate (linear warm-up, cosine decay to 2% of it)
    batch: int = 8
    warmup: int = 100
    clipnorm: float = 10.0
    seed: int = 0  # sampling of batches, flips, anchors and RoIs
    freeze: tuple = ()  # layer-name prefixes kept fixed, e.g. ("block1_",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    n_train: int  # training images, shapes.generate(n_train, 128, seed 0)
    faster: TrainConfig  # stage 1: Faster R-CNN from scratch
    mask: TrainConfig  # stage 2: Mask R-CNN from the stage-1 weights


RECIPE = Recipe(
    n_train=4000,
    faster=TrainConfig(steps=2500, lr=4e-3),
    mask=TrainConfig(steps=1000, lr=3e-3, warmup=50, seed=1, freeze=("block1_", "block2_", "block3_")),
)
# a few seconds of training: only checks that the pipeline runs (`--smoke`, cached under its own key)
SMOKE = Recipe(n_train=64, faster=TrainConfig(steps=20, lr=4e-3, warmup=2),
               mask=TrainConfig(steps=10, lr=3e-3, warmup=2, seed=1, freeze=("block1_", "block2_", "block3_")))


def shapes_module():
    return importlib.import_module("tfmodels.zoo.shapes")


def configs():
    labels = tuple(shapes_module().CLASSES)
    return (dataclasses.replace(faster_rcnn.TINY, labels=labels),
            dataclasses.replace(mask_rcnn.CONFIGS["tiny"], labels=labels))


# ================================================================ box helpers (TF)


def box_iou(a, b):
    """IoU of (ymin, xmin, ymax, xmax) boxes a [..., N, 4] and b [..., M, 4] -> [..., N, M]."""
    a = tf.convert_to_tensor(a, tf.float32)[..., :, None, :]
    b = tf.convert_to_tensor(b, tf.float32)[..., None, :, :]
    ih = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    iw = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = ih * iw
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_a + area_b - inter, 1e-12)


def encode_deltas(ref, boxes, stds=(1.0, 1.0, 1.0, 1.0)):
    """The (dy, dx, dh, dw) taking ref to boxes, divided by stds: the inverse of faster_rcnn.decode_deltas."""
    ref = tf.convert_to_tensor(ref, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    ha = tf.maximum(ref[..., 2] - ref[..., 0], 1e-6)
    wa = tf.maximum(ref[..., 3] - ref[..., 1], 1e-6)
    h = tf.maximum(boxes[..., 2] - boxes[..., 0], 1e-6)
    w = tf.maximum(boxes[..., 3] - boxes[..., 1], 1e-6)
    dy = (boxes[..., 0] + 0.5 * h - ref[..., 0] - 0.5 * ha) / ha
    dx = (boxes[..., 1] + 0.5 * w - ref[..., 1] - 0.5 * wa) / wa
    d = tf.stack([dy, dx, tf.math.log(h / ha), tf.math.log(w / wa)], axis=-1)
    return d / tf.constant(stds, tf.float32)


def smooth_l1(x, beta: float):
    """0.5 x^2 / beta for |x| < beta, |x| - 0.5 beta beyond (elementwise)."""
    ax = tf.abs(x)
    return tf.where(ax < beta, 0.5 * tf.square(x) / beta, ax - 0.5 * beta)


def _rank(mask, key):
    """Per row, the rank (0 = largest key) of each True element among the True ones; False rank last."""
    k = tf.where(mask, key, -1.0)
    order = tf.argsort(k, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


# ================================================================ targets


def rpn_targets(anchors, gt_boxes, gt_valid, key, batch_size=RPN_BATCH, pos_fraction=RPN_POS_FRACTION,
                pos_iou=RPN_POS_IOU, neg_iou=RPN_NEG_IOU):
    """Anchor labels and regression targets.

    anchors [K, 4]; gt_boxes [B, G, 4]; gt_valid [B, G] (bool or 0/1); key [B, K]
    uniform random values in [0, 1) deciding the sample (higher wins).
    Returns labels [B, K] int32 (1 positive, 0 negative, -1 not sampled/ignored)
    and deltas [B, K, 4] from each anchor to its best gt box.
    """
    valid = tf.cast(gt_valid, tf.bool)
    iou = box_iou(anchors, gt_boxes)  # [B, K, G] (anchors broadcast)
    iou = tf.where(valid[:, None, :], iou, -1.0)
    max_iou = tf.reduce_max(iou, axis=-1)
    best_gt = tf.argmax(iou, axis=-1, output_type=tf.int32)
    gt_max = tf.reduce_max(iou, axis=1, keepdims=True)  # [B, 1, G]
    best_anchor = tf.reduce_any((iou == gt_max) & valid[:, None, :] & (gt_max > 0.0), axis=-1)
    pos = (max_iou >= pos_iou) | best_anchor
    neg = (max_iou < neg_iou) & ~pos
    max_pos = int(batch_size * pos_fraction)
    pos = pos & (_rank(pos, key) < max_pos)
    n_pos = tf.reduce_sum(tf.cast(pos, tf.int32), axis=-1, keepdims=True)
    neg = neg & (_rank(neg, key) < batch_size - n_pos)
    labels = tf.where(pos, 1, tf.where(neg, 0, -1))
    matched = tf.gather(gt_boxes, best_gt, batch_dims=1)
    deltas = encode_deltas(tf.broadcast_to(anchors, tf.shape(matched)), matched)
    return labels, deltas


def sample_rois(rois, roi_valid, gt_boxes, gt_classes, gt_valid, key, num=ROI_BATCH,
                fg_fraction=ROI_FG_FRACTION, fg_iou=ROI_FG_IOU):
    """Samples `num` RoIs per image for the box head, foreground first.

    rois [B, P, 4], roi_valid [B, P]; gt_boxes [B, G, 4], gt_classes [B, G]
    (0-based), gt_valid [B, G]; key [B, P] uniform in [0, 1).
    Returns a dict of [B, num, ...] tensors: rois, labels (0 background, c + 1),
    weights (1 sampled, 0 filler when fewer than num valid RoIs), fg (bool),
    gt_index (best gt) and targets (deltas to the best gt / RCNN_DELTA_STDS).
    """
    valid = tf.cast(gt_valid, tf.bool)
    iou = tf.where(valid[:, None, :], box_iou(rois, gt_boxes), -1.0)  # [B, P, G]
    max_iou = tf.reduce_max(iou, axis=-1)
    best_gt = tf.argmax(iou, axis=-1, output_type=tf.int32)
    rv = tf.cast(roi_valid, tf.bool)
    fg = rv & (max_iou >= fg_iou)
    bg = rv & (max_iou < fg_iou)
    max_fg = int(round(num * fg_fraction))
    fg = fg & (_rank(fg, key) < max_fg)
    n_fg = tf.reduce_sum(tf.cast(fg, tf.int32), axis=-1, keepdims=True)
    bg = bg & (_rank(bg, key) < num - n_fg)
    order_key = tf.where(fg, 2.0 + key, tf.where(bg, 1.0 + key, key - 1.0))
    _, idx = tf.math.top_k(order_key, k=num, sorted=True)
    take = lambda t: tf.gather(t, idx, batch_dims=1)  # noqa: E731
    s_fg, s_bg, s_gt = take(fg), take(bg), take(best_gt)
    s_rois = take(rois)
    matched = tf.gather(gt_boxes, s_gt, batch_dims=1)
    cls = tf.gather(tf.cast(gt_classes, tf.int32), s_gt, batch_dims=1)
    return {
        "rois": s_rois,
        "labels": tf.where(s_fg, cls + 1, 0),
        "weights": tf.cast(s_fg | s_bg, tf.float32),
        "fg": s_fg,
        "gt_index": s_gt,
        "targets": encode_deltas(s_rois, matched, faster_rcnn.RCNN_DELTA_STDS),
    }


def mask_crop_boxes(boxes, mask_size: int, image_size: int):
    """Normalised boxes -> the crop_and_resize boxes sampling the MASK CONVENTION's cell centres.

    crop_and_resize samples row i at y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (n - 1) (pixel
    index units, centre of pixel p = p); cell i should sample the pixel-edge coordinate
    (ymin + (i + .5) / n * h) * H, i.e. index coordinate minus 0.5.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    n, s = float(mask_size), float(image_size)
    lo = boxes[..., :2] * s + 0.5 * (boxes[..., 2:] - boxes[..., :2]) * s / n - 0.5
    step = (boxes[..., 2:] - boxes[..., :2]) * s / n
    hi = lo + (n - 1.0) * step
    return tf.concat([lo, hi], axis=-1) / (s - 1.0)


def mask_targets(gt_masks, rois, gt_index, mask_size: int = mask_rcnn.MASK_SIZE):
    """gt_masks [B, G, H, W] (0/1), rois [B, R, 4], gt_index [B, R] -> [B, R, n, n] float 0/1 targets."""
    gt_masks = tf.cast(gt_masks, tf.float32)
    b, g, h = tf.shape(gt_masks)[0], tf.shape(gt_masks)[1], gt_masks.shape[2]
    r = rois.shape[1]
    flat = tf.reshape(gt_masks, [-1, h, gt_masks.shape[3], 1])
    ind = tf.reshape(tf.range(b)[:, None] * g + gt_index, [-1])
    crop = tf.image.crop_and_resize(flat, tf.reshape(mask_crop_boxes(rois, mask_size, h), [-1, 4]), ind,
                                    [mask_size, mask_size], method="bilinear")
    return tf.reshape(tf.cast(crop[..., 0] >= 0.5, tf.float32), [-1, r, mask_size, mask_size])


# ================================================================ losses


def rpn_loss(cls_logits, deltas, labels, targets, beta=RPN_BETA):
    """cls_logits [B, K, 2] (background, foreground), deltas [B, K, 4] -> (objectness, box) losses,
    both summed over the sampled anchors and divided by their number."""
    sampled = tf.cast(labels >= 0, tf.float32)
    n = tf.maximum(tf.reduce_sum(sampled), 1.0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), cls_logits)
    pos = tf.cast(labels == 1, tf.float32)
    box = tf.reduce_sum(smooth_l1(deltas - targets, beta), axis=-1)
    return tf.reduce_sum(ce * sampled) / n, tf.reduce_sum(box * pos) / n


def head_loss(logits, deltas, labels, weights, targets, beta=HEAD_BETA):
    """logits [B, R, C+1], deltas [B, R, 4C] class-specific; labels [B, R] (0 = background) ->
    (classification, box) losses, summed and divided by the number of sampled RoIs."""
    n = tf.maximum(tf.reduce_sum(weights), 1.0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    c = logits.shape[-1] - 1
    d = tf.reshape(deltas, tf.concat([tf.shape(deltas)[:-1], [c, 4]], 0))
    d = tf.gather(d, tf.maximum(labels - 1, 0), batch_dims=2)  # the gt class's deltas
    fg = tf.cast(labels > 0, tf.float32) * weights
    box = tf.reduce_sum(smooth_l1(d - targets, beta), axis=-1)
    return tf.reduce_sum(ce * weights) / n, tf.reduce_sum(box * fg) / n


def mask_loss(mask_logits, labels, fg, targets):
    """mask_logits [B, R, n, n, C], labels [B, R] (1-based class; fg only), fg [B, R], targets
    [B, R, n, n] -> mean per-pixel sigmoid BCE of the gt class's mask over the foreground RoIs."""
    logits = tf.transpose(mask_logits, [0, 1, 4, 2, 3])  # [B, R, C, n, n]
    logits = tf.gather(logits, tf.maximum(labels - 1, 0), batch_dims=2)
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits), axis=[-2, -1])
    w = tf.cast(fg, tf.float32)
    return tf.reduce_sum(bce * w) / tf.maximum(tf.reduce_sum(w), 1.0)


# ================================================================ data


def gt_arrays(objects, size: int = SIZE, max_objects: int = MAX_OBJECTS, masks: bool = True):
    """shapes objects -> padded boxes [N, G, 4] (normalised ymin, xmin, ymax, xmax), classes [N, G]
    int32, valid [N, G] float32 and (masks=True) masks [N, G, size, size] uint8."""
    n = len(objects)
    boxes = np.zeros((n, max_objects, 4), np.float32)
    classes = np.zeros((n, max_objects), np.int32)
    valid = np.zeros((n, max_objects), np.float32)
    m = np.zeros((n, max_objects, size, size), np.uint8) if masks else None
    for i, objs in enumerate(objects):
        if len(objs) > max_objects:
            raise ValueError(f"image {i}: {len(objs)} objects > {max_objects}")
        for j, o in enumerate(objs):
            x1, y1, x2, y2 = o["box"]
            boxes[i, j] = (y1 / size, x1 / size, y2 / size, x2 / size)
            classes[i, j] = o["class"]
            valid[i, j] = 1.0
            if masks:
                m[i, j] = o["mask"]
    return boxes, classes, valid, m


def flip_batch(images, boxes, masks, flip):
    """Horizontal flip of the images (and boxes, masks) where flip[i]."""
    images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    fb = boxes.copy()
    fb[:, :, 1], fb[:, :, 3] = 1.0 - boxes[:, :, 3], 1.0 - boxes[:, :, 1]
    boxes = np.where(flip[:, None, None], fb, boxes)
    if masks is not None:
        masks = np.where(flip[:, None, None, None], masks[..., ::-1], masks)
    return images, boxes, masks


# ================================================================ models


def build_models(with_masks: bool, seed: int = 0):
    """The export Keras model (faster_rcnn.build_graph [+ mask head]) for the shapes labels."""
    fcfg, mcfg = configs()
    cfg = mcfg if with_masks else fcfg
    keras.utils.set_random_seed(seed)
    inp, out = faster_rcnn.build_graph(cfg)
    outputs = {k: out[k] for k in faster_rcnn.DETECTION_KEYS}
    if with_masks:
        outputs["detection_masks"] = mask_rcnn.mask_head(
            out["features"], out["detection_boxes"], out["detection_classes"], cfg.num_classes,
            mask_rcnn.MASK_CHANNELS // cfg.width_div)
    model = keras.Model(inp, outputs, name="mask_rcnn" if with_masks else "faster_rcnn")
    model.rcnn_config = cfg
    return model


def exportable(model, name: str, golden_images: np.ndarray, extra: dict) -> common.Exportable:
    cfg = model.rcnn_config
    masks = name == "shapes_mask_rcnn"
    keys = mask_rcnn.OUTPUT_KEYS if masks else faster_rcnn.DETECTION_KEYS
    spec = faster_rcnn.rcnn_spec(cfg, "Mask R-CNN" if masks else "Faster R-CNN", "tiny", masks=masks)
    m = faster_rcnn.make_exportable(name, model, cfg, keys, spec)
    x = (golden_images[:4].astype(np.float32) * np.float32(1.0 / 255.0)).astype(np.float32)
    m.golden_inputs = lambda rng: {"images": x}
    m.extra_files = dict(extra)
    return m


def _conv_logits(layer, x):
    """A Conv2D's pre-activation output (mask_logits applies a sigmoid)."""
    y = tf.nn.conv2d(x, layer.kernel.value, strides=1, padding="SAME")
    return y + layer.bias.value


TRUNK_PREFIXES = ("block", "rpn_")  # the backbone and RPN layers the two exports share


def is_trunk(layer) -> bool:
    return layer.name.startswith(TRUNK_PREFIXES)


class Trainer:
    """One training step over the layers of export models (called directly, so trained and
    exported weights are the same variables).

    models[0] supplies the backbone and RPN (copy them into the others afterwards, copy_weights
    with trunk=True); every model's box head (fc6 .. bbox_pred, with its own RoI op: max pooling
    for Faster R-CNN, average pooling for Mask R-CNN) is trained on the same sampled RoIs, and a
    model with a mask head trains it on the first MASK_ROIS foreground RoIs of each image.
    """

    def __init__(self, models, tc: TrainConfig):
        self.models, self.tc = list(models), tc
        m0 = self.models[0]
        cfg = self.cfg = m0.rcnn_config
        g = m0.get_layer
        self.trunk = keras.Model(m0.input, [g("block5_conv3").output, g("rpn_cls_logits").output,
                                            g("rpn_bbox_deltas").output])
        self.proposals = g("proposals")
        self.heads = []  # (loss prefix, pool op, [fc6, fc7], cls_score, bbox_pred)
        self.mask = None
        for m in self.models:
            op = m.rcnn_config.roi_op
            h = m.get_layer
            self.heads.append((op, "max" if op == "pool" else "avg", [h("fc6"), h("fc7")], h("cls_score"),
                               h("bbox_pred")))
            if any(l.name == "mask_logits" for l in m.layers):
                self.mask = ([h(f"mask_conv{i}") for i in range(1, mask_rcnn.MASK_CONVS + 1)] + [h("mask_deconv")],
                             h("mask_logits"))
        self.anchors = tf.constant(faster_rcnn.generate_anchors(cfg))
        layers_ = [l for i, m in enumerate(self.models) for l in m.layers if i == 0 or not is_trunk(l)]
        layers_ = [l for l in layers_ if l.trainable_weights and not l.name.startswith(tuple(tc.freeze))]
        self.kvars = [v for l in layers_ for v in l.trainable_weights]
        self.vars = [v.value for v in self.kvars]
        warmup = min(tc.warmup, tc.steps // 10)
        sched = keras.optimizers.schedules.CosineDecay(0.0, tc.steps - warmup, alpha=0.02,
                                                       warmup_target=tc.lr, warmup_steps=warmup)
        self.opt = keras.optimizers.Adam(sched, global_clipnorm=tc.clipnorm)
        self.opt.build(self.kvars)
        self.step = tf.function(self._step)

    def losses(self, images, gt_boxes, gt_classes, gt_valid, gt_masks, seed):
        cfg = self.cfg
        b = tf.shape(images)[0]
        k = self.anchors.shape[0]
        feats, rpn_cls, rpn_deltas = self.trunk(images, training=True)
        cls2 = tf.reshape(rpn_cls, [b, k, 2])
        d4 = tf.reshape(rpn_deltas, [b, k, 4])
        labels, targets = rpn_targets(self.anchors, gt_boxes, gt_valid,
                                      tf.random.stateless_uniform([b, k], seed))
        out = dict(zip(("rpn_cls", "rpn_box"), rpn_loss(cls2, d4, labels, targets)))
        props, pvalid = self.proposals([tf.stop_gradient(rpn_cls), tf.stop_gradient(rpn_deltas)])
        rois = tf.concat([props, gt_boxes], axis=1)
        rvalid = tf.concat([pvalid, gt_valid], axis=1)
        s = sample_rois(rois, rvalid, gt_boxes, gt_classes, gt_valid,
                        tf.random.stateless_uniform(tf.shape(rvalid), seed + 1))
        r = ROI_BATCH
        sampled = tf.stop_gradient(s["rois"])
        for name, pool, fcs, cls_score, bbox_pred in self.heads:
            crops = faster_rcnn.roi_crop(feats, sampled, 2 * cfg.pool_size, pool)
            x = tf.reshape(crops, [-1, cfg.pool_size * cfg.pool_size * feats.shape[-1]])
            for layer in fcs:
                x = layer(x)
            logits = tf.reshape(cls_score(x), [b, r, cfg.num_classes + 1])
            deltas = tf.reshape(bbox_pred(x), [b, r, 4 * cfg.num_classes])
            out[f"{name}_cls"], out[f"{name}_box"] = head_loss(logits, deltas, s["labels"], s["weights"],
                                                               s["targets"])
        if self.mask is not None:
            convs, logits_layer = self.mask
            nf = MASK_ROIS  # foreground comes first, in random order
            mrois = sampled[:, :nf]
            y = faster_rcnn.roi_crop(feats, mrois, mask_rcnn.MASK_CROP, None)
            for layer in convs:
                y = layer(y)
            n = mask_rcnn.MASK_SIZE
            y = tf.reshape(_conv_logits(logits_layer, y), [b, nf, n, n, cfg.num_classes])
            t = mask_targets(gt_masks, mrois, s["gt_index"][:, :nf])
            out["mask"] = mask_loss(y, s["labels"][:, :nf], s["fg"][:, :nf], t)
        return out

    def _step(self, images, gt_boxes, gt_classes, gt_valid, gt_masks, seed):
        with tf.GradientTape() as tape:
            parts = self.losses(images, gt_boxes, gt_classes, gt_valid, gt_masks, seed)
            total = tf.add_n(list(parts.values()))
        grads = tape.gradient(total, self.vars)
        self.opt.apply_gradients(zip(grads, self.kvars))
        return dict(parts, total=total)


def train(models, tc: TrainConfig, data, log=print):
    """Trains models (see Trainer) on data = (uint8 images, boxes, classes, valid, masks); returns seconds."""
    images, boxes, classes, valid, masks = data
    tr = Trainer(models, tc)
    with_masks = tr.mask is not None
    rng = np.random.default_rng(tc.seed)
    t0 = time.time()
    run = {}
    for step in range(tc.steps):
        idx = np.sort(rng.choice(len(images), tc.batch, replace=False))
        flip = rng.random(tc.batch) < 0.5
        im, bx, mk = flip_batch(images[idx], boxes[idx], masks[idx] if with_masks else None, flip)
        x = tf.constant(im.astype(np.float32) * np.float32(1.0 / 255.0))
        mk = tf.constant(mk) if with_masks else tf.zeros([tc.batch, MAX_OBJECTS, 1, 1], tf.uint8)
        parts = tr.step(x, tf.constant(bx), tf.constant(classes[idx]), tf.constant(valid[idx]), mk,
                        tf.constant([tc.seed, step], tf.int32))
        for k, v in parts.items():
            run[k] = run.get(k, 0.0) + float(v)
        if (step + 1) % 100 == 0 or step == 0:
            n = 1 if step == 0 else 100
            log(f"  step {step + 1:5d}/{tc.steps} " + " ".join(f"{k} {v / n:.4f}" for k, v in run.items())
                + f"  {time.time() - t0:.0f}s")
            run = {}
    return time.time() - t0


def copy_weights(src, dst, trunk_only: bool = False):
    """Copies every weighted layer of src (only the backbone and RPN with trunk_only) into the
    same-named layer of dst; returns the number of layers copied."""
    n = 0
    for layer in src.layers:
        w = layer.get_weights()
        if w and (is_trunk(layer) or not trunk_only):
            dst.get_layer(layer.name).set_weights(w)
            n += 1
    return n


def load_weights_from_export(model, path: str):
    """Restores the variables common.export saved (same order as model.variables)."""
    loaded = tf.saved_model.load(path)
    saved = loaded.variables_
    if len(saved) != len(model.variables):
        raise ValueError(f"{path}: {len(saved)} variables, model has {len(model.variables)}")
    for v, s in zip(model.variables, saved):
        if tuple(v.shape) != tuple(s.shape):
            raise ValueError(f"{path}: shape mismatch {v.path} {v.shape} vs {s.shape}")
        v.assign(s.numpy())


# ================================================================ evaluation


def paste_mask(mask, box, size: int = SIZE):
    """mask [n, n] in [0, 1] (box-relative), box normalised (ymin, xmin, ymax, xmax) -> bool [size, size]
    (the MASK CONVENTION: pixels whose centre lies in [x1, x2) x [y1, y2), bilinear, edge-clamped,
    >= 0.5; the same as detect_ref.paste_mask, i.e. the detect plugin)."""
    n = mask.shape[0]
    y1, x1, y2, x2 = (float(v) * size for v in box)
    out = np.zeros((size, size), bool)
    if y2 <= y1 or x2 <= x1:
        return out
    c = np.arange(size) + 0.5
    ry, rx = (c - y1) / (y2 - y1), (c - x1) / (x2 - x1)
    iy, ix = np.nonzero((ry >= 0) & (ry < 1))[0], np.nonzero((rx >= 0) & (rx < 1))[0]
    if not len(iy) or not len(ix):
        return out

    def coords(r):
        u = np.clip(r * n - 0.5, 0, n - 1)
        lo = np.floor(u).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, u - lo

    ylo, yhi, fy = coords(ry[iy])
    xlo, xhi, fx = coords(rx[ix])
    m = mask.astype(np.float64)
    top = m[ylo][:, xlo] * (1 - fx) + m[ylo][:, xhi] * fx
    bot = m[yhi][:, xlo] * (1 - fx) + m[yhi][:, xhi] * fx
    val = top * (1 - fy)[:, None] + bot * fy[:, None]
    out[np.ix_(iy, ix)] = val >= 0.5
    return out


def _iou_np(a, b):
    """a [N, 4], b [M, 4] (any consistent corner order: lo, lo, hi, hi) -> [N, M]."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    ih = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iw = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ih * iw
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    return inter / np.maximum(union, 1e-12)


def average_precision(tp, scores, n_gt: int) -> float:
    """VOC all-points interpolated AP from per-detection tp flags and scores."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    tp = np.asarray(tp, np.float64)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    rec = np.concatenate([[0.0], ctp / n_gt, [1.0]])
    prec = np.concatenate([[0.0], ctp / np.maximum(ctp + cfp, 1e-12), [0.0]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    i = np.nonzero(rec[1:] != rec[:-1])[0]
    return float(np.sum((rec[i + 1] - rec[i]) * prec[i + 1]))


def evaluate(outputs: dict, objects, num_classes: int, size: int = SIZE, iou_thr: float = 0.5) -> dict:
    """Box AP@iou_thr per class (and mAP) and, with detection_masks, the mean mask IoU of the true
    positives, from OD API outputs (boxes normalised ymin, xmin, ymax, xmax; classes 1-based)."""
    has_masks = "detection_masks" in outputs
    per_class = {c: ([], []) for c in range(num_classes)}
    n_gt = np.zeros(num_classes, int)
    mask_ious, mask_ious_05 = [], []
    for i, objs in enumerate(objects):
        n = int(outputs["num_detections"][i])
        boxes = outputs["detection_boxes"][i, :n] * size  # ymin, xmin, ymax, xmax pixels
        scores = outputs["detection_scores"][i, :n]
        classes = np.round(outputs["detection_classes"][i, :n]).astype(int) - 1
        gt_cls = np.array([o["class"] for o in objs], int)
        gt_box = np.array([(o["box"][1], o["box"][0], o["box"][3], o["box"][2]) for o in objs], np.float64).reshape(-1, 4)
        for c in range(num_classes):
            n_gt[c] += int(np.sum(gt_cls == c))
        used = np.zeros(len(objs), bool)
        ious = _iou_np(boxes, gt_box) if len(objs) else np.zeros((n, 0))
        for d in np.argsort(-scores, kind="stable"):
            c = classes[d]
            # VOC: the best-overlapping gt of the class; a TP only if it is still unmatched
            allc = np.nonzero(gt_cls == c)[0]
            best = allc[np.argmax(ious[d, allc])] if len(allc) else -1
            ok = best >= 0 and ious[d, best] >= iou_thr and not used[best]
            per_class[c][0].append(bool(ok))
            per_class[c][1].append(float(scores[d]))
            if ok:
                used[best] = True
                if has_masks:
                    pm = paste_mask(outputs["detection_masks"][i, d], boxes[d] / size, size)
                    gm = objs[best]["mask"]
                    inter, union = np.sum(pm & gm), np.sum(pm | gm)
                    v = inter / union if union else 0.0
                    mask_ious.append(v)
                    if scores[d] >= 0.5:
                        mask_ious_05.append(v)
    ap = [average_precision(per_class[c][0], per_class[c][1], n_gt[c]) for c in range(num_classes)]
    res = {"ap50": [round(a, 4) for a in ap], "map50": float(np.nanmean(ap)), "n_gt": int(n_gt.sum()),
           "n_det": int(sum(len(v[0]) for v in per_class.values()))}
    if has_masks:
        res["mask_iou"] = float(np.mean(mask_ious)) if mask_ious else 0.0
        res["mask_iou_score05"] = float(np.mean(mask_ious_05)) if mask_ious_05 else 0.0
        res["n_matched"] = len(mask_ious)
    return res


def run_saved_model(path: str, images: np.ndarray, batch: int = 50) -> dict:
    fn = tf.saved_model.load(path).signatures[common.SIGNATURE]
    outs = []
    for i in range(0, len(images), batch):
        x = tf.constant(images[i:i + batch].astype(np.float32) * np.float32(1.0 / 255.0))
        outs.append({k: v.numpy() for k, v in fn(images=x).items()})
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


# ================================================================ cache and CLI


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgeinfer", "trained")


def cache_key() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    files = [shapes_module().__file__] + [os.path.join(here, f) for f in
                                          ("train_rcnn.py", "faster_rcnn.py", "mask_rcnn.py", "common.py", "layers.py")]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(os.path.basename(f).encode() + b"\0" + fh.read() + b"\0")
    h.update(tf.__version__.encode())
    return h.hexdigest()[:16]


def golden_extras(images, objects) -> tuple[dict, dict]:
    """The extra golden .npy files and the labels JSON for the first N_GOLDEN held-out images."""
    n = N_GOLDEN
    masks = np.zeros((n, MAX_OBJECTS, SIZE, SIZE), bool)
    for i, objs in enumerate(objects[:n]):
        for j, o in enumerate(objs):
            masks[i, j] = o["mask"]
    labels = {
        "labels": list(shapes_module().CLASSES),
        "box_format": "x1, y1, x2, y2 in pixels of the 128x128 image, x2/y2 exclusive",
        "count": [len(o) for o in objects[:n]],
        "classes": [[int(x["class"]) for x in o] for o in objects[:n]],
        "boxes": [[[float(v) for v in x["box"]] for x in o] for o in objects[:n]],
    }
    extra = {"golden/shapes_images.npy": np.ascontiguousarray(images[:n]), "golden/shapes_masks.npy": masks}
    return extra, labels


class Session:
    """The cache and the trainings of one CLI run."""

    def __init__(self, recipe: Recipe = RECIPE, log=print):
        self.recipe = recipe
        self.log = log
        self.key = cache_key() + ("" if recipe == RECIPE else "-" + hashlib.sha256(repr(recipe).encode()).hexdigest()[:8])
        self.root = cache_root()
        self._eval = None

    def cached(self, name: str) -> str:
        return os.path.join(self.root, f"{name}-{self.key}")

    def make(self, names) -> dict:
        """{name: cached version directory}, training (and caching) the missing ones first."""
        missing = [n for n in NAMES if n in names and not os.path.isdir(self.cached(n))]
        if missing:
            self.train_and_cache(missing)
        return {n: self.cached(n) for n in names}

    def eval_data(self):
        if self._eval is None:
            self._eval = shapes_module().generate(N_EVAL, SIZE, EVAL_SEED)
        return self._eval

    def train_and_cache(self, names) -> None:
        """Stage 1 (Faster R-CNN, or its cached export when only Mask R-CNN is missing), then
        stage 2 (Mask R-CNN) when wanted; each model is exported, evaluated and cached."""
        t0 = time.time()
        r = self.recipe
        tf.config.experimental.enable_op_determinism()
        images, objects = shapes_module().generate(r.n_train, SIZE, TRAIN_SEED)
        data = (images,) + gt_arrays(objects)
        self.log(f"generated {r.n_train} training images ({int(data[3].sum())} objects) in {time.time() - t0:.1f}s")
        keras.utils.set_random_seed(0)
        fmodel = build_models(False, 0)
        seconds = {}
        if "shapes_faster_rcnn" in names:
            self.log(f"shapes_faster_rcnn: {r.faster}")
            seconds["faster"] = round(train([fmodel], r.faster, data, self.log), 1)
            self.export_and_cache("shapes_faster_rcnn", fmodel, t0, seconds)
        else:
            load_weights_from_export(fmodel, self.cached("shapes_faster_rcnn"))
            self.log("shapes_faster_rcnn: weights from the cache")
        if "shapes_mask_rcnn" in names:
            mmodel = build_models(True, 1)
            copy_weights(fmodel, mmodel)  # backbone, RPN and box head (same layer names)
            self.log(f"shapes_mask_rcnn: from shapes_faster_rcnn, {r.mask}")
            seconds["mask"] = round(train([mmodel], r.mask, data, self.log), 1)
            self.export_and_cache("shapes_mask_rcnn", mmodel, t0, seconds)

    def export_and_cache(self, name: str, model, t0: float, seconds: dict) -> None:
        ev_images, ev_objects = self.eval_data()
        extra, labels = golden_extras(ev_images, ev_objects)
        os.makedirs(self.root, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{name}-", dir=self.root)
        try:
            vdir = common.export(exportable(model, name, ev_images, extra), stage, version=VERSION)
            with open(os.path.join(vdir, "golden", "shapes_labels.json"), "w") as f:
                json.dump(labels, f)
            metrics = evaluate(run_saved_model(vdir, ev_images), ev_objects, model.rcnn_config.num_classes)
            metrics.update(train_seconds=dict(seconds), wall_seconds=round(time.time() - t0, 1),
                           recipe=dataclasses.asdict(self.recipe), key=self.key, tensorflow=tf.__version__)
            self.log(f"{name}: {json.dumps(metrics)}")
            path = self.cached(name)
            shutil.rmtree(path, ignore_errors=True)
            with open(path + ".json", "w") as f:
                json.dump(metrics, f, indent=1)
            os.rename(vdir, path)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def install(src: str, out: str, name: str, version: int = VERSION) -> str:
    """Copies a cached version directory to <out>/<name>/<version> (temporary name + rename)."""
    final = os.path.join(out, name, str(version))
    tmp = os.path.join(out, name, f".{version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models")
    ap.add_argument("--retrain", action="store_true", help="ignore (and replace) the cached versions")
    ap.add_argument("--smoke", action="store_true",
                    help="a few training steps only (pipeline check; cached under its own key)")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {list(NAMES)}")
    t0 = time.time()
    s = Session(SMOKE if args.smoke else RECIPE, lambda *a: print(*a, flush=True))
    if args.retrain:
        for n in names:
            shutil.rmtree(s.cached(n), ignore_errors=True)
    for n, src in s.make(names).items():
        with open(src + ".json") as f:
            m = json.load(f)
        print(f"{n}: box mAP@0.5 {m['map50']:.3f}" + (f", mask IoU {m['mask_iou']:.3f}" if "mask_iou" in m else "")
              + f" on {N_EVAL} held-out images (training {m['train_seconds']} s)", flush=True)
        print(f"{n} -> {install(src, args.out, n)} (cache {src})", flush=True)
    print(f"done in {time.time() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
