"""Trains the tiny YOLOv3 on the generated shapes set and exports it as "shapes_yolov3".

    python -m tfmodels.zoo.train_yolov3 --out models

The network is yolov3.build_model with the tiny settings (Darknet-53 + 3-scale
head, channel widths / 8, 3 classes, the tiny anchors of yolov3.py:
scaled_anchors(SIZE)), trained from scratch on shapes.generate(N_TRAIN, SIZE,
shapes.TRAIN_SEED) images, fed as the Go plugin feeds frames: RGB / 255 (the
images are square at the input size, so the plugin's letterbox is the
identity), with random flips and 90-degree rotations (the classes are
invariant under them).

Loss (YOLOv3, Redmon & Farhadi 2018): each ground-truth box is assigned to the
anchor, among the 9, with the best shape IoU (boxes centred on each other);
that anchor's grid (anchor_masks: grid_s8 anchors 0-2, grid_s16 3-5, grid_s32
6-8) and the cell holding the box centre are responsible for it. Per
responsible prediction: sigmoid-BCE on tx, ty against the centre's offset in
the cell, squared error on tw, th against log(box / anchor) (both weighted by
2 - w*h / SIZE^2), objectness BCE against 1 and per-class BCE. Every other
prediction gets objectness BCE against 0, except those whose decoded box has
IoU > IGNORE_IOU with some ground-truth box (ignored). Adam with warm-up and a
cosine decay.

Evaluation (numpy, independent of TensorFlow): decode per the paper
(x = (sigmoid(tx) + col) * stride, w = anchor_w * exp(tw), ...), score =
sigmoid(objectness) * sigmoid(class), keep scores >= SCORE_THRESHOLD, per-class
NMS at IoU NMS_IOU, then PASCAL VOC-style AP at IoU 0.5 (all-points
interpolation) per class on N_EVAL held-out images (shapes.HELDOUT_SEED), and
mAP = mean over the classes.

The trained version directory is cached in
${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/shapes_yolov3-<key>/, key = the
first 16 hex digits of sha256(shapes.py, train_yolov3.py, yolov3.py, common.py,
layers.py, tf.__version__); with a cache hit nothing is trained, the directory
is copied to <out>/shapes_yolov3/1 (temporary name + rename).

Export (common.export): raw grids grid_s8/grid_s16/grid_s32, input "images",
the manifest of yolov3.build (task detect_yolo, resize letterbox, scale 1/255)
with labels = shapes.CLASSES. Golden files: input_images.npy = the first 4
held-out images / 255 and their outputs, plus
  golden/shapes_images.npy   uint8 [N_GOLDEN, SIZE, SIZE, 3], the first N_GOLDEN held-out images
  golden/shapes_labels.json  [{"objects": [{"class", "label", "box": [x1, y1, x2, y2]}]}] per image
                             (pixels of the input, x2/y2 exclusive)
  golden/shapes_metrics.json the mAP measured here on N_EVAL held-out images and on the N_GOLDEN.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from tfmodels.zoo import shapes

NAME = "shapes_yolov3"
VERSION = 1
SIZE = 96
WIDTH_DIV = 8
N_TRAIN = 4000
BATCH = 32
STEPS = 1500
LR = 2e-3
WARMUP = 100
IGNORE_IOU = 0.5
SCORE_THRESHOLD = 0.3
NMS_IOU = 0.45
N_EVAL = 300
N_GOLDEN = 50
N_GOLDEN_INPUTS = 4
SEED = 0
STRIDES = (8, 16, 32)
NUM_CLASSES = len(shapes.CLASSES)
MAX_BOXES = shapes.MAX_SHAPES

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_FILES = ("shapes.py", "train_yolov3.py", "yolov3.py", "common.py", "layers.py")


def anchors(size: int = SIZE) -> np.ndarray:
    from tfmodels.zoo import yolov3

    return np.asarray(yolov3.scaled_anchors(size), dtype=np.float32).reshape(9, 2)


# --------------------------------------------------------------------------
# Data: targets and augmentation (numpy)


def boxes_of(objs: list[dict]) -> np.ndarray:
    """[k, 5] float32 rows x1, y1, x2, y2, class."""
    return np.asarray([[*o["box"], o["class"]] for o in objs], dtype=np.float32).reshape(-1, 5)


def dihedral(img: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 flips/rotations of a square image (k in 0..7) and its boxes."""
    n = img.shape[0]
    b = boxes.copy()
    if k & 4:  # transpose: (x, y) -> (y, x)
        img = img.transpose(1, 0, 2)
        b[:, [0, 1, 2, 3]] = b[:, [1, 0, 3, 2]]
    if k & 1:  # horizontal flip
        img = img[:, ::-1]
        b[:, [0, 2]] = n - b[:, [2, 0]]
    if k & 2:  # vertical flip
        img = img[::-1]
        b[:, [1, 3]] = n - b[:, [3, 1]]
    return np.ascontiguousarray(img), b


def shape_iou(wh: np.ndarray, anc: np.ndarray) -> np.ndarray:
    """IoU of boxes [k, 2] and anchors [a, 2] sharing a centre: [k, a]."""
    inter = np.minimum(wh[:, None, 0], anc[None, :, 0]) * np.minimum(wh[:, None, 1], anc[None, :, 1])
    return inter / (wh[:, None, 0] * wh[:, None, 1] + anc[None, :, 0] * anc[None, :, 1] - inter)


def targets(batch_boxes: list[np.ndarray], size: int, anc: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per scale [B, G, G, 3, 6 + C] (tx, ty, tw, th, box weight, obj, one-hot class),
    and the padded ground truth [B, MAX_BOXES, 4] (x1, y1, x2, y2; zeros = none)."""
    bsz = len(batch_boxes)
    ys = [np.zeros((bsz, size // s, size // s, 3, 6 + NUM_CLASSES), np.float32) for s in STRIDES]
    gt = np.zeros((bsz, MAX_BOXES, 4), np.float32)
    for i, b in enumerate(batch_boxes):
        if len(b) == 0:
            continue
        gt[i, : len(b)] = b[:MAX_BOXES, :4]
        wh = np.maximum(b[:, 2:4] - b[:, 0:2], 1.0)
        rank = np.argsort(-shape_iou(wh, anc), axis=1, kind="stable")
        for (x1, y1, x2, y2, c), (w, h), order in zip(b, wh, rank):
            # the best anchor; should its slot (cell, anchor) already hold another
            # box of this image, the next best anchor whose slot is free
            for a in order:
                level, k = divmod(int(a), 3)
                s = STRIDES[level]
                g = size // s
                cx, cy = (x1 + x2) / 2 / s, (y1 + y2) / 2 / s
                gi, gj = min(int(cx), g - 1), min(int(cy), g - 1)
                t = ys[level][i, gj, gi, k]
                if t[5] == 0:
                    break
            else:
                continue
            t[0], t[1] = cx - gi, cy - gj
            t[2], t[3] = math.log(w / anc[a, 0]), math.log(h / anc[a, 1])
            t[4] = 2.0 - w * h / (size * size)
            t[5] = 1.0
            t[6:] = 0.0
            t[6 + int(c)] = 1.0
    return ys, gt


class Batches:
    """Endless shuffled batches of the training set with random dihedral augmentation."""

    def __init__(self, images: np.ndarray, objects: list[list[dict]], size: int, rng: np.random.Generator):
        self.images, self.boxes, self.size, self.rng = images, [boxes_of(o) for o in objects], size, rng
        self.anc = anchors(size)
        self.order, self.pos = rng.permutation(len(images)), 0

    def next(self, bsz: int):
        idx = []
        while len(idx) < bsz:
            if self.pos == len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.images)), 0
            idx.append(self.order[self.pos])
            self.pos += 1
        imgs, boxes = [], []
        for i in idx:
            im, b = dihedral(self.images[i], self.boxes[i], int(self.rng.integers(8)))
            imgs.append(im)
            boxes.append(b)
        x = np.stack(imgs).astype(np.float32) / 255.0
        ys, gt = targets(boxes, self.size, self.anc)
        return x, ys, gt


# --------------------------------------------------------------------------
# Loss (TensorFlow)


def yolo_loss(outputs: dict, ys: list, gt, size: int, anc: np.ndarray):
    import tensorflow as tf

    bce = tf.nn.sigmoid_cross_entropy_with_logits
    bsz = tf.cast(tf.shape(gt)[0], tf.float32)
    valid = tf.reduce_any(gt[..., 2:] > gt[..., :2], axis=-1)  # [B, M]
    total = {"xy": 0.0, "wh": 0.0, "obj": 0.0, "cls": 0.0}
    for level, s in enumerate(STRIDES):
        g = size // s
        raw = tf.reshape(outputs[f"grid_s{s}"], [-1, g, g, 3, 5 + NUM_CLASSES])
        y = ys[level]
        obj = y[..., 5]
        wgt = y[..., 4] * obj
        total["xy"] += tf.reduce_sum(wgt[..., None] * bce(labels=y[..., 0:2], logits=raw[..., 0:2]))
        total["wh"] += tf.reduce_sum(wgt[..., None] * 0.5 * tf.square(raw[..., 2:4] - y[..., 2:4]))
        total["cls"] += tf.reduce_sum(obj[..., None] * bce(labels=y[..., 6:], logits=raw[..., 5:]))
        # ignore mask: decoded predictions overlapping some ground truth by > IGNORE_IOU
        grid = np.stack(np.meshgrid(np.arange(g), np.arange(g)), -1).astype(np.float32)[None, :, :, None, :]
        a = anc[3 * level : 3 * level + 3][None, None, None]
        xy = (tf.sigmoid(raw[..., 0:2]) + grid) * s
        wh = tf.exp(tf.clip_by_value(raw[..., 2:4], -10.0, 8.0)) * a
        p1, p2 = xy - wh / 2, xy + wh / 2  # [B, g, g, 3, 2]
        g1 = gt[:, None, None, None, :, 0:2]
        g2 = gt[:, None, None, None, :, 2:4]
        lo = tf.maximum(p1[..., None, :], g1)
        hi = tf.minimum(p2[..., None, :], g2)
        inter = tf.reduce_prod(tf.maximum(hi - lo, 0.0), -1)
        area_p = tf.reduce_prod(p2 - p1, -1)[..., None]
        area_g = tf.reduce_prod(g2 - g1, -1)
        iou = inter / tf.maximum(area_p + area_g - inter, 1e-9)
        iou = tf.where(valid[:, None, None, None, :], iou, 0.0)
        ignore = tf.cast(tf.reduce_max(iou, -1) > IGNORE_IOU, tf.float32)
        lobj = bce(labels=obj, logits=raw[..., 4])
        total["obj"] += tf.reduce_sum(obj * lobj + (1.0 - obj) * (1.0 - ignore) * lobj)
    return {k: v / bsz for k, v in total.items()}


# --------------------------------------------------------------------------
# Decode, NMS and AP (numpy)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def decode(grids: dict, size: int, anc: np.ndarray, threshold: float = SCORE_THRESHOLD) -> list[np.ndarray]:
    """Raw grids (batch first) -> per image [k, 6] rows x1, y1, x2, y2, score, class
    (pixels of the input) with score = sigmoid(obj) * sigmoid(class) >= threshold,
    before NMS. Every (box, class) pair over the threshold is a candidate."""
    per_level = []
    for level, s in enumerate(STRIDES):
        raw = np.asarray(grids[f"grid_s{s}"], dtype=np.float64)
        b, gh, gw = raw.shape[:3]
        raw = raw.reshape(b, gh, gw, 3, 5 + NUM_CLASSES)
        cols, rows = np.meshgrid(np.arange(gw), np.arange(gh))
        cx = (sigmoid(raw[..., 0]) + cols[None, :, :, None]) * s
        cy = (sigmoid(raw[..., 1]) + rows[None, :, :, None]) * s
        a = anc[3 * level : 3 * level + 3]
        w = np.exp(np.minimum(raw[..., 2], 20.0)) * a[:, 0]
        h = np.exp(np.minimum(raw[..., 3], 20.0)) * a[:, 1]
        score = sigmoid(raw[..., 4:5]) * sigmoid(raw[..., 5:])
        box = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        per_level.append((box.reshape(b, -1, 4), score.reshape(b, -1, NUM_CLASSES)))
    out = []
    for i in range(per_level[0][0].shape[0]):
        box = np.concatenate([p[0][i] for p in per_level])
        score = np.concatenate([p[1][i] for p in per_level])
        j, c = np.nonzero(score >= threshold)
        out.append(np.concatenate([box[j], score[j, c, None], c[:, None]], 1).reshape(-1, 6))
    return out


def iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:4], boxes[:, 2:4])
    inter = np.prod(np.maximum(hi - lo, 0), axis=1)
    area = lambda b: np.prod(np.maximum(b[..., 2:4] - b[..., :2], 0), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def nms(dets: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Per-class greedy NMS on [k, 6] detections; result sorted by score."""
    keep = []
    for c in np.unique(dets[:, 5]):
        d = dets[dets[:, 5] == c]
        d = d[np.argsort(-d[:, 4], kind="stable")]
        while len(d):
            keep.append(d[0])
            d = d[1:][iou_one(d[0], d[1:]) <= iou] if len(d) > 1 else d[:0]
    keep = np.asarray(keep, dtype=np.float64).reshape(-1, 6)
    return keep[np.argsort(-keep[:, 4], kind="stable")]


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ all-points interpolated AP."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def mean_ap(dets: list[np.ndarray], gts: list[np.ndarray], num_classes: int = NUM_CLASSES, iou: float = 0.5) -> tuple[float, list[float]]:
    """dets[i]: [k, 6] x1, y1, x2, y2, score, class; gts[i]: [m, 5] x1, y1, x2, y2, class.
    A detection is a true positive when its best-IoU ground truth of its class
    (IoU >= iou) is not yet matched by a higher-scoring detection."""
    aps = []
    for c in range(num_classes):
        recs = [(float(d[4]), i, d[:4]) for i, ds in enumerate(dets) for d in ds if int(d[5]) == c]
        recs.sort(key=lambda r: -r[0])
        g = [gt[gt[:, 4] == c, :4] for gt in gts]
        used = [np.zeros(len(x), bool) for x in g]
        npos = sum(len(x) for x in g)
        tp = np.zeros(len(recs))
        for k, (_, i, box) in enumerate(recs):
            if len(g[i]) == 0:
                continue
            ious = iou_one(box, g[i])
            j = int(np.argmax(ious))
            if ious[j] >= iou and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
        if npos == 0:
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, 1e-12)
        aps.append(average_precision(recall, precision))
    return float(np.mean(aps)), aps


def evaluate(predict, images: np.ndarray, objects: list[list[dict]], size: int = SIZE, threshold: float = SCORE_THRESHOLD) -> tuple[float, list[float]]:
    """mAP@0.5 of predict(float images [B, size, size, 3] in 0..1) -> raw grids."""
    anc = anchors(size)
    dets = []
    for i in range(0, len(images), 100):
        grids = predict(images[i : i + 100].astype(np.float32) / 255.0)
        grids = {k: np.asarray(v) for k, v in grids.items()}
        dets += [nms(d) for d in decode(grids, size, anc, threshold)]
    return mean_ap(dets, [boxes_of(o) for o in objects])


# --------------------------------------------------------------------------
# Training and export


def init_prior_bias(model, p_obj: float = 0.01) -> None:
    """Output biases start at the priors (objectness p_obj, class 1/C), as in
    RetinaNet: the first steps then do not spend themselves on pushing every
    empty cell's objectness down."""
    for s in STRIDES:
        layer = model.get_layer(f"yolo_grid_s{s}")
        b = np.zeros(3 * (5 + NUM_CLASSES), np.float32).reshape(3, 5 + NUM_CLASSES)
        b[:, 4] = math.log(p_obj / (1 - p_obj))
        b[:, 5:] = math.log(1 / (NUM_CLASSES - 1))
        layer.bias.assign(b.reshape(-1))


def train(steps: int = STEPS, n_train: int = N_TRAIN, batch: int = BATCH, lr: float = LR, log_every: int = 100, eval_every: int = 0):
    """Returns the trained Keras model."""
    import keras
    import tensorflow as tf

    from tfmodels.zoo import yolov3

    np.random.seed(SEED)
    tf.random.set_seed(SEED)
    keras.utils.set_random_seed(SEED)
    t0 = time.time()
    images, objects = shapes.generate(n_train, SIZE, shapes.TRAIN_SEED)
    print(f"generated {n_train} training images in {time.time() - t0:.1f}s", flush=True)
    batches = Batches(images, objects, SIZE, np.random.default_rng(SEED))
    anc = anchors(SIZE)
    model = yolov3.build_model(SIZE, NUM_CLASSES, WIDTH_DIV)
    init_prior_bias(model)
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-5, decay_steps=max(steps - WARMUP, 1), alpha=0.01, warmup_target=lr, warmup_steps=WARMUP)
    opt = keras.optimizers.Adam(schedule)
    g_specs = [tf.TensorSpec([None, SIZE // s, SIZE // s, 3, 6 + NUM_CLASSES], tf.float32) for s in STRIDES]

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32), g_specs, tf.TensorSpec([None, MAX_BOXES, 4], tf.float32)])
    def step(x, ys, gt):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            parts = yolo_loss(out, ys, gt, SIZE, anc)
            loss = tf.add_n(list(parts.values()))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss, parts

    predict = tf.function(lambda x: model(x, training=False))
    held = shapes.generate(N_EVAL, SIZE, shapes.HELDOUT_SEED) if eval_every else None
    t1, c1 = time.time(), time.process_time()
    acc = None
    for it in range(1, steps + 1):
        x, ys, gt = batches.next(batch)
        loss, parts = step(tf.constant(x), [tf.constant(y) for y in ys], tf.constant(gt))
        vals = np.array([float(loss)] + [float(parts[k]) for k in ("xy", "wh", "obj", "cls")])
        acc = vals if acc is None else 0.9 * acc + 0.1 * vals
        if it == 1:
            print(f"first step (tracing) {time.time() - t1:.1f}s", flush=True)
        if it % log_every == 0 or it == steps:
            print(f"step {it}/{steps} loss {acc[0]:.3f} (xy {acc[1]:.3f} wh {acc[2]:.3f} obj {acc[3]:.3f} cls {acc[4]:.3f}) "
                  f"lr {float(schedule(it)):.2e} {time.time() - t1:.0f}s (cpu {time.process_time() - c1:.0f}s)", flush=True)
        if eval_every and it % eval_every == 0 and it < steps:
            m, aps = evaluate(predict, *held)
            print(f"  held-out mAP@0.5 {m:.4f} {np.round(aps, 4).tolist()}", flush=True)
    print(f"trained {steps} steps of {batch} in {time.time() - t1:.0f}s", flush=True)
    return model


def exportable(model):
    """The Exportable of the trained model (manifest of yolov3.build, labels = shapes.CLASSES)."""
    import tensorflow as tf

    from tfmodels.zoo import common, yolov3

    def fn(images):
        out = model(images, training=False)
        return {k: out[k] for k in ("grid_s8", "grid_s16", "grid_s32")}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)})
    spec = {
        "task": "detect_yolo",
        "architecture": "YOLOv3",
        "variant": "tiny",
        "signature": common.SIGNATURE,
        "labels": list(shapes.CLASSES),
        "input": {
            "key": "images", "height": SIZE, "width": SIZE, "channels": 3, "layout": "NHWC",
            "dtype": "float32", "resize": "letterbox", "scale": 1.0 / 255.0,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        },
        "output": {
            "grids": ["grid_s8", "grid_s16", "grid_s32"],
            "strides": list(STRIDES),
            "anchors": yolov3.scaled_anchors(SIZE),
            "anchor_masks": list(yolov3.ANCHOR_MASKS),
        },
    }
    golden_imgs, _ = shapes.generate(N_GOLDEN, SIZE, shapes.HELDOUT_SEED)

    def golden_inputs(rng):
        return {"images": golden_imgs[:N_GOLDEN_INPUTS].astype(np.float32) / np.float32(255.0)}

    return common.Exportable(
        name=NAME, keras_model=model, serve=serve, spec=spec, golden_inputs=golden_inputs,
        extra_files={"golden/shapes_images.npy": golden_imgs})


def labels_json(objects: list[list[dict]]) -> list[dict]:
    return [{"objects": [{"class": int(o["class"]), "label": shapes.CLASSES[o["class"]], "box": [float(v) for v in o["box"]]}
                         for o in objs]} for objs in objects]


def cache_key() -> str:
    import tensorflow as tf

    h = hashlib.sha256()
    for f in KEY_FILES:
        with open(os.path.join(HERE, f), "rb") as fh:
            h.update(fh.read())
    h.update(tf.__version__.encode())
    return h.hexdigest()[:16]


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgeinfer", "trained")


def saved_model_map(path: str, n: int = N_EVAL) -> tuple[float, list[float]]:
    """mAP@0.5 of the exported SavedModel at path on n held-out images."""
    import tensorflow as tf

    from tfmodels.zoo import common

    fn = tf.saved_model.load(path).signatures[common.SIGNATURE]
    images, objects = shapes.generate(n, SIZE, shapes.HELDOUT_SEED)
    return evaluate(lambda x: fn(images=tf.constant(x)), images, objects)


def train_into_cache(dest: str, steps: int = STEPS, eval_every: int = 0) -> dict:
    """Trains, exports, measures and moves the version directory to dest (atomic rename)."""
    from tfmodels.zoo import common

    t0 = time.time()
    model = train(steps=steps, eval_every=eval_every)
    train_time = time.time() - t0
    work = f"{dest}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    path = common.export(exportable(model), work, version=VERSION)
    _, golden_objs = shapes.generate(N_GOLDEN, SIZE, shapes.HELDOUT_SEED)
    m, aps = saved_model_map(path)
    mg, _ = saved_model_map(path, N_GOLDEN)
    metrics = {
        "map50": round(m, 4), "ap50_per_class": [round(a, 4) for a in aps], "images": N_EVAL,
        "map50_golden": round(mg, 4), "golden_images": N_GOLDEN,
        "score_threshold": SCORE_THRESHOLD, "nms_iou": NMS_IOU, "train_seconds": round(train_time, 1),
        "steps": steps, "batch": BATCH, "train_images": N_TRAIN,
    }
    with open(os.path.join(path, "golden", "shapes_labels.json"), "w") as f:
        json.dump(labels_json(golden_objs), f, indent=1)
    with open(os.path.join(path, "golden", "shapes_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(path, dest)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def install(src: str, out: str) -> str:
    """Copies the cached version directory to <out>/shapes_yolov3/<VERSION> (temporary name + rename)."""
    final = os.path.join(out, NAME, str(VERSION))
    tmp = os.path.join(out, NAME, f".{VERSION}.tmp-{os.getpid()}")
    os.makedirs(os.path.dirname(final), exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models", help="model repository (default models)")
    ap.add_argument("--retrain", action="store_true", help="train even if the cache has this key")
    ap.add_argument("--steps", type=int, default=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--eval-every", type=int, default=0, help="held-out mAP every N steps (development)")
    args = ap.parse_args(argv)

    t0 = time.time()
    key = cache_key()
    cached = os.path.join(cache_dir(), f"{NAME}-{key}")
    if args.steps != STEPS:
        cached += f"-steps{args.steps}"
    if os.path.isdir(cached) and not args.retrain:
        print(f"{NAME}: cached {cached}", flush=True)
    else:
        os.makedirs(cache_dir(), exist_ok=True)
        print(f"{NAME}: training (cache key {key})", flush=True)
        train_into_cache(cached, steps=args.steps, eval_every=args.eval_every)
    final = install(cached, args.out)
    metrics_path = os.path.join(final, "golden", "shapes_metrics.json")
    with open(metrics_path) as f:
        metrics = json.load(f)
    print(f"{NAME}: {final}  held-out mAP@0.5 {metrics['map50']:.4f} on {metrics['images']} images "
          f"(per class {metrics['ap50_per_class']}), training {metrics['train_seconds']:.0f}s, "
          f"wall {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
