"""Independent numpy reference of the detection decodes of plugins/detect.

Written from the papers (YOLOv3: Redmon & Farhadi 2018; the TF Object Detection
API output signature; YOLOv8-style anchor-free heads) and from edgeinfer's
decode spec, without looking at the Go code. numpy only (pycocotools is
imported lazily, for the RLE of instance masks).

Everything is float64 and batch 1. A box is (x1, y1, x2, y2). "Input pixels"
are the model input's pixel grid; "source pixels" are the frame's.

Pipeline (`detect`):

    decode_<kind>(...)        -> Candidates (boxes in input pixels, class, score,
                                 candidate order, mask row)
    postprocess(...)          a. drop non-finite box/score and x2 < x1 / y2 < y1
                              b. map to the source frame, clip to [0,W]x[0,H]
                              c. class filter, then drop empty boxes (clipped
                                 area 0: outside the frame, or flat) and min_area
                              d. greedy NMS: per class for the decoders that need
                                 it (yolo, anchorfree, rows with nms), across
                                 classes with class_agnostic (for every decoder:
                                 on top of a model's own per-class suppression)
                              e. sort by (-score, class, order), cut to max_detections
    masks (odapi)             bilinear-resample each kept mask over its mapped
                              (unclipped) source box, threshold, COCO RLE

Also here: `average_precision` / `mean_ap` (AP at one IoU threshold, all-point
or COCO 101-point interpolation), used by the evaluation tests.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

DEFAULT_OPTIONS = {
    "score_threshold": 0.25,
    "nms_threshold": 0.45,
    "max_detections": 100,
    "class_agnostic": False,
    "min_area": 0.0,
    "classes": None,
    "mask_threshold": 0.5,
}

KINDS = ("yolo", "odapi", "rows", "anchorfree")


# --------------------------------------------------------------- arithmetic


def round_half_away(x: float) -> int:
    """Round to nearest, halves away from zero (like Go's math.Round), exactly."""
    x = float(x)
    t = math.trunc(x)
    if abs(x - t) >= 0.5:
        t += 1 if x > 0 else -1
    return int(t)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def area(box) -> float:
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def iou(a, b) -> float:
    """IoU of two boxes; 0 when the intersection has width or height <= 0."""
    iw = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    ih = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (area(a) + area(b) - inter)


def iou_one_to_many(a, bs: np.ndarray) -> np.ndarray:
    """Vectorised `iou(a, b)` for every row b of bs (same arithmetic, same order)."""
    bs = np.asarray(bs, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[2], bs[:, 2]) - np.maximum(a[0], bs[:, 0])
    ih = np.minimum(a[3], bs[:, 3]) - np.maximum(a[1], bs[:, 1])
    ok = (iw > 0) & (ih > 0)
    inter = np.where(ok, iw * ih, 0.0)
    aa = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    ab = np.maximum(bs[:, 2] - bs[:, 0], 0.0) * np.maximum(bs[:, 3] - bs[:, 1], 0.0)
    union = aa + ab - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    return out


# ---------------------------------------------------------------- transform


@dataclass(frozen=True)
class Transform:
    """Source frame (W x H) -> model input (w x h), and back."""

    src_w: int
    src_h: int
    in_w: int
    in_h: int
    resize: str
    sx: float
    sy: float
    pad_x: int
    pad_y: int

    def to_source(self, box) -> tuple[float, float, float, float]:
        """Map an input-pixel box corner by corner to source pixels (no clipping)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        return (
            (x1 - self.pad_x) / self.sx,
            (y1 - self.pad_y) / self.sy,
            (x2 - self.pad_x) / self.sx,
            (y2 - self.pad_y) / self.sy,
        )

    def to_source_many(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0] = (b[:, 0] - self.pad_x) / self.sx
        out[:, 1] = (b[:, 1] - self.pad_y) / self.sy
        out[:, 2] = (b[:, 2] - self.pad_x) / self.sx
        out[:, 3] = (b[:, 3] - self.pad_y) / self.sy
        return out

    def clip(self, boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, 0] = np.clip(b[:, 0], 0.0, float(self.src_w))
        b[:, 2] = np.clip(b[:, 2], 0.0, float(self.src_w))
        b[:, 1] = np.clip(b[:, 1], 0.0, float(self.src_h))
        b[:, 3] = np.clip(b[:, 3], 0.0, float(self.src_h))
        return b


def make_transform(src_w: int, src_h: int, in_w: int, in_h: int, resize: str) -> Transform:
    W, H, w, h = int(src_w), int(src_h), int(in_w), int(in_h)
    if min(W, H, w, h) <= 0:
        raise ValueError("sizes must be positive")
    if resize == "stretch":
        return Transform(W, H, w, h, resize, w / W, h / H, 0, 0)
    if resize == "letterbox":
        s = min(w / W, h / H)
        nw = min(max(round_half_away(W * s), 1), w)
        nh = min(max(round_half_away(H * s), 1), h)
        return Transform(W, H, w, h, resize, nw / W, nh / H, (w - nw) // 2, (h - nh) // 2)
    raise ValueError(f"unknown resize mode {resize!r}")


# --------------------------------------------------------------- candidates


@dataclass
class Candidates:
    """Decoded candidates, in candidate order."""

    boxes: np.ndarray  # [N, 4] float64, input pixels
    classes: np.ndarray  # [N] int64
    scores: np.ndarray  # [N] float64
    order: np.ndarray  # [N] int64: position in the decode's enumeration
    mask_rows: np.ndarray = field(default=None)  # [N] int64 (odapi): row into masks

    @staticmethod
    def empty() -> "Candidates":
        return Candidates(
            np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx) -> "Candidates":
        idx = np.asarray(idx, dtype=np.int64)
        return Candidates(
            self.boxes[idx],
            self.classes[idx],
            self.scores[idx],
            self.order[idx],
            None if self.mask_rows is None else self.mask_rows[idx],
        )


def _best_class(scores: np.ndarray):
    """Per row: (index of the highest score, lowest index on ties; that score).

    A row holding a NaN gets score NaN (so the candidate is dropped in step a):
    the maximum of a set with a NaN in it is undefined.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] == 0:
        return np.zeros(len(scores), np.int64), np.zeros(len(scores))
    nan = np.isnan(scores).any(axis=1)
    filled = np.where(np.isnan(scores), -np.inf, scores)
    k = np.argmax(filled, axis=1)  # argmax returns the first maximum
    best = filled[np.arange(len(scores)), k]
    best = np.where(nan, np.nan, best)
    return k.astype(np.int64), best


def _class_id(v: np.ndarray, label_offset: int) -> np.ndarray:
    """round_half_away(v) - label_offset, as int; a non-finite (or absurdly
    large) v gives -1, i.e. the candidate is dropped as out of range."""
    v = np.asarray(v, dtype=np.float64)
    out = np.full(v.shape, -1, dtype=np.int64)
    ok = np.isfinite(v) & (np.abs(np.where(np.isfinite(v), v, 0.0)) < 2.0**31)
    r = np.where(ok, v, 0.0)
    t = np.trunc(r)
    t = t + np.where(np.abs(r - t) >= 0.5, np.sign(r), 0.0)  # r - t is exact
    out[ok] = t[ok].astype(np.int64) - int(label_offset)
    return out


def decode_yolo(tensors: dict, output: dict, labels: int, score_threshold: float) -> Candidates:
    """YOLOv3 grids. Candidate order: grid (as listed), then cy, cx, anchor b."""
    grids = list(output["grids"])
    strides = [float(s) for s in output["strides"]]
    anchors = np.asarray(output["anchors"], dtype=np.float64).reshape(-1, 2)
    masks = list(output["anchor_masks"])
    if len(masks) % len(grids):
        raise ValueError("len(anchor_masks) must be a multiple of len(grids)")
    B = len(masks) // len(grids)
    C = int(labels)
    boxes, classes, scores, order = [], [], [], []
    base = 0
    for gi, key in enumerate(grids):
        t = np.asarray(tensors[key], dtype=np.float64)
        if t.ndim != 4 or t.shape[0] != 1 or t.shape[3] != B * (5 + C):
            raise ValueError(f"grid {key}: shape {t.shape}, want [1, gh, gw, {B * (5 + C)}]")
        gh, gw = t.shape[1], t.shape[2]
        t = t[0].reshape(gh, gw, B, 5 + C)  # (cy, cx, b, channel): row-major = candidate order
        cy, cx, _ = np.meshgrid(np.arange(gh), np.arange(gw), np.arange(B), indexing="ij")
        aw = anchors[masks[gi * B : gi * B + B], 0][None, None, :]
        ah = anchors[masks[gi * B : gi * B + B], 1][None, None, :]
        s = strides[gi]
        with np.errstate(over="ignore", invalid="ignore"):
            bx = (sigmoid(t[..., 0]) + cx) * s
            by = (sigmoid(t[..., 1]) + cy) * s
            bw = aw * np.exp(t[..., 2])
            bh = ah * np.exp(t[..., 3])
            obj = sigmoid(t[..., 4])
            sc = obj[..., None] * sigmoid(t[..., 5:])  # [gh, gw, B, C]
        sc = np.where(sc < score_threshold, 0.0, sc)  # NaN < thr is False: NaN stays
        with np.errstate(invalid="ignore"):
            box = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=-1)
        n = gh * gw * B
        k, best = _best_class(sc.reshape(n, C))
        keep = ~(best == 0.0)  # dropped when the best score is 0 (NaN rows go on, dropped in a.)
        boxes.append(box.reshape(n, 4)[keep])
        classes.append(k[keep])
        scores.append(best[keep])
        order.append(base + np.arange(n)[keep])
        base += n
    if not boxes:
        return Candidates.empty()
    return Candidates(
        np.concatenate(boxes), np.concatenate(classes), np.concatenate(scores), np.concatenate(order)
    )


def decode_odapi(tensors: dict, output: dict, labels: int, in_w: int, in_h: int, score_threshold: float) -> Candidates:
    boxes = np.asarray(tensors[output["boxes"]], dtype=np.float64)
    scores = np.asarray(tensors[output["scores"]], dtype=np.float64)
    classes = np.asarray(tensors[output["classes"]], dtype=np.float64)
    num = np.asarray(tensors[output["num_detections"]], dtype=np.float64).reshape(-1)
    N = boxes.shape[1]
    n = float(num[0])
    n = 0 if not math.isfinite(n) else min(max(int(n), 0), N)  # int() truncates
    b = boxes[0, :n]
    box = np.stack([b[:, 1] * in_w, b[:, 0] * in_h, b[:, 3] * in_w, b[:, 2] * in_h], axis=1)
    cls = _class_id(classes[0, :n], int(output.get("label_offset", 0)))
    sc = scores[0, :n]
    keep = (cls >= 0) & (cls < labels) & ~(sc < score_threshold)
    idx = np.arange(n)[keep]
    return Candidates(box[keep], cls[keep], sc[keep], idx.copy(), idx.copy())


def _convert_box(v: np.ndarray, fmt: str, units: str, in_w: int, in_h: int) -> np.ndarray:
    """4 columns in `fmt` -> (x1, y1, x2, y2) in input pixels. Units are applied
    first (x-like values times w, y-like values times h), then the format."""
    v = np.asarray(v, dtype=np.float64)
    if units not in ("pixels", "normalized"):
        raise ValueError(f"unknown box_units {units!r}")
    with np.errstate(invalid="ignore", over="ignore"):
        if fmt == "xyxy":
            x1, y1, x2, y2 = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
        elif fmt == "yxyx":
            y1, x1, y2, x2 = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
        elif fmt == "cxcywh":
            cx, cy, bw, bh = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
            if units == "normalized":
                cx, cy, bw, bh = cx * in_w, cy * in_h, bw * in_w, bh * in_h
            return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        else:
            raise ValueError(f"unknown box_format {fmt!r}")
        if units == "normalized":
            x1, x2, y1, y2 = x1 * in_w, x2 * in_w, y1 * in_h, y2 * in_h
        return np.stack([x1, y1, x2, y2], axis=1)


def decode_rows(tensors: dict, output: dict, labels: int, in_w: int, in_h: int, score_threshold: float) -> Candidates:
    d = np.asarray(tensors[output["detections"]], dtype=np.float64)
    if d.ndim != 3 or d.shape[0] != 1:
        raise ValueError(f"detections: shape {d.shape}, want [1, N, K]")
    d = d[0]
    bc = int(output["box_column"])
    box = _convert_box(d[:, bc : bc + 4], output["box_format"], output.get("box_units", "pixels"), in_w, in_h)
    sc = d[:, int(output["score_column"])]
    cls = _class_id(d[:, int(output["class_column"])], int(output.get("label_offset", 0)))
    keep = (cls >= 0) & (cls < labels) & ~(sc < score_threshold)
    idx = np.arange(len(d))[keep]
    return Candidates(box[keep], cls[keep], sc[keep], idx, None)


def decode_anchorfree(tensors: dict, output: dict, labels: int, in_w: int, in_h: int, score_threshold: float) -> Candidates:
    p = np.asarray(tensors[output["predictions"]], dtype=np.float64)
    layout = output.get("layout", "channels_first")
    if p.ndim != 3 or p.shape[0] != 1:
        raise ValueError(f"predictions: shape {p.shape}")
    if layout == "channels_first":
        p = p[0].T  # [N, 4+C]
    elif layout == "channels_last":
        p = p[0]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if p.shape[1] != 4 + labels:
        raise ValueError(f"predictions: {p.shape[1]} channels, want {4 + labels}")
    box = _convert_box(p[:, :4], "cxcywh", output.get("box_units", "pixels"), in_w, in_h)
    k, best = _best_class(p[:, 4:])
    keep = ~(best < score_threshold)
    idx = np.arange(len(p))[keep]
    return Candidates(box[keep], k[keep], best[keep], idx, None)


# ------------------------------------------------------------ postprocessing


def sort_order(c: Candidates) -> np.ndarray:
    """Indices sorted by score descending, then class ascending, then candidate order."""
    return np.lexsort((c.order, c.classes, -c.scores))


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, order: np.ndarray,
        iou_threshold: float, class_agnostic: bool = False, trace: list | None = None,
        limit: int | None = None) -> np.ndarray:
    """Greedy NMS. Returns the kept indices, in (-score, class, order) order.

    Per class (default) the classes are independent, so each is run on its own.
    `limit` stops after that many kept boxes (per class, then overall): exact,
    because a box kept later never removes one kept earlier.
    If `trace` is a list, every IoU value that was compared with the threshold is
    appended to it (as arrays), for conditioning checks.
    """
    c = Candidates(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64),
                   np.asarray(scores, np.float64), np.asarray(order, np.int64))
    idx = sort_order(c)
    if class_agnostic:
        groups = [idx]
    else:
        groups = [idx[c.classes[idx] == k] for k in np.unique(c.classes)]
    kept = []
    for g in groups:
        b = c.boxes[g]
        alive = np.ones(len(g), dtype=bool)
        n = 0
        for i in range(len(g)):
            if not alive[i]:
                continue
            kept.append(g[i])
            n += 1
            if limit is not None and n >= limit:
                break
            rest = np.nonzero(alive[i + 1 :])[0] + i + 1
            if len(rest) == 0:
                break
            ious = iou_one_to_many(b[i], b[rest])
            if trace is not None:
                trace.append(ious)
            alive[rest[ious > iou_threshold]] = False
    rank = np.empty(len(idx), dtype=np.int64)
    rank[idx] = np.arange(len(idx))
    kept = np.asarray(kept, dtype=np.int64)
    kept = kept[np.argsort(rank[kept], kind="stable")]
    return kept if limit is None else kept[:limit]


@dataclass
class Detection:
    cls: int
    score: float
    box: tuple  # source pixels, clipped
    mapped: tuple  # source pixels, before clipping
    mask_row: int | None = None
    order: int = 0


def options_with_defaults(options: dict | None) -> dict:
    o = dict(DEFAULT_OPTIONS)
    for k, v in (options or {}).items():
        if v is not None or k == "classes":
            o[k] = v
    return o


def postprocess(c: Candidates, tf: Transform, options: dict, nms_enabled: bool,
                diag: dict | None = None) -> list[Detection]:
    o = options_with_defaults(options)
    # a. non-finite values, inverted boxes (input pixels)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(c.boxes).all(axis=1) & np.isfinite(c.scores)
        ok &= ~(c.boxes[:, 2] < c.boxes[:, 0]) & ~(c.boxes[:, 3] < c.boxes[:, 1])
    c = c.take(np.nonzero(ok)[0])
    # b. source frame, clipped
    mapped = tf.to_source_many(c.boxes)
    clipped = tf.clip(mapped)
    # c. class filter, then empty boxes (nothing inside the frame) and min_area
    keep = np.ones(len(c), dtype=bool)
    if o["classes"] is not None:
        keep &= np.isin(c.classes, np.asarray(list(o["classes"]), dtype=np.int64))
    areas = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    if diag is not None:
        diag["areas"] = areas[keep]
    keep &= (areas > 0) & ~(areas < float(o["min_area"]))
    sel = np.nonzero(keep)[0]
    c, mapped, clipped = c.take(sel), mapped[sel], clipped[sel]
    cs = Candidates(clipped, c.classes, c.scores, c.order)
    if diag is not None:
        diag["nms_scores"] = c.scores.copy()
    # d. NMS
    if nms_enabled or bool(o["class_agnostic"]):
        trace = [] if diag is not None else None
        kept = nms(clipped, c.scores, c.classes, c.order, float(o["nms_threshold"]), bool(o["class_agnostic"]), trace,
                   limit=max(int(o["max_detections"]), 0))
        if diag is not None:
            diag["ious"] = np.concatenate(trace) if trace else np.zeros(0)
    else:
        kept = sort_order(cs)  # e. sort
    # e. (NMS already returns them sorted) cut
    kept = kept[: max(int(o["max_detections"]), 0)]
    out = []
    for i in kept:
        out.append(Detection(
            int(c.classes[i]), float(c.scores[i]), tuple(float(v) for v in clipped[i]),
            tuple(float(v) for v in mapped[i]),
            None if c.mask_rows is None else int(c.mask_rows[i]), int(c.order[i]),
        ))
    return out


# -------------------------------------------------------------------- masks


def bilinear_sample(m: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample m [mh, mw] at (u, v) (u along width), neighbours clamped to the grid."""
    m = np.asarray(m, dtype=np.float64)
    mh, mw = m.shape

    def axis(t, n):
        lo = np.floor(t)
        frac = t - lo
        lo = lo.astype(np.int64)
        hi = lo + 1
        neg = lo < 0
        lo = np.where(neg, 0, lo)
        hi = np.where(neg, 0, hi)
        frac = np.where(neg, 0.0, frac)
        over = hi > n - 1
        hi = np.where(over, n - 1, hi)
        top = lo >= n - 1
        lo = np.where(top, n - 1, lo)
        frac = np.where(top, 0.0, frac)
        return lo, hi, frac

    u0, u1, fu = axis(np.asarray(u, np.float64), mw)
    v0, v1, fv = axis(np.asarray(v, np.float64), mh)
    top = m[v0, u0] * (1 - fu) + m[v0, u1] * fu
    bot = m[v1, u0] * (1 - fu) + m[v1, u1] * fu
    return top * (1 - fv) + bot * fv


def paste_mask(m: np.ndarray, box, W: int, H: int, threshold: float, diag: dict | None = None) -> np.ndarray:
    """uint8 [H, W]: 1 where the pixel centre is in [X1,X2)x[Y1,Y2) of `box`
    (source pixels, unclipped) and the bilinear sample of m is >= threshold."""
    X1, Y1, X2, Y2 = (float(t) for t in box)
    mh, mw = m.shape
    out = np.zeros((H, W), dtype=np.uint8)
    cx = np.arange(W, dtype=np.float64) + 0.5
    cy = np.arange(H, dtype=np.float64) + 0.5
    xs = np.nonzero((cx >= X1) & (cx < X2))[0]
    ys = np.nonzero((cy >= Y1) & (cy < Y2))[0]
    if diag is not None:
        diag.setdefault("edge", []).append(np.concatenate([np.abs(cx - X1), np.abs(cx - X2), np.abs(cy - Y1), np.abs(cy - Y2)]))
    if len(xs) == 0 or len(ys) == 0:
        return out
    u = (cx[xs] - X1) / (X2 - X1) * mw - 0.5
    v = (cy[ys] - Y1) / (Y2 - Y1) * mh - 0.5
    uu, vv = np.meshgrid(u, v)
    s = bilinear_sample(m, uu, vv)
    if diag is not None:
        diag.setdefault("mask", []).append(np.abs(s - threshold).ravel())
    out[np.ix_(ys, xs)] = (s >= threshold).astype(np.uint8)
    return out


def rle_encode(bitmap: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(bitmap.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


# --------------------------------------------------------------- whole case


def decode(kind: str, tensors: dict, output: dict, labels: int, in_w: int, in_h: int, score_threshold: float):
    if kind == "yolo":
        return decode_yolo(tensors, output, labels, score_threshold), True
    if kind == "odapi":
        return decode_odapi(tensors, output, labels, in_w, in_h, score_threshold), False
    if kind == "rows":
        return decode_rows(tensors, output, labels, in_w, in_h, score_threshold), bool(output.get("nms", False))
    if kind == "anchorfree":
        return decode_anchorfree(tensors, output, labels, in_w, in_h, score_threshold), True
    raise ValueError(f"unknown kind {kind!r}")


def detect(case: dict, tensors: dict, diag: dict | None = None) -> list[dict]:
    """Expected detections of a case (the case.json dict without "expected";
    tensors keyed by output key). Returns [{"class", "score", "box"[, "mask"]}]."""
    o = options_with_defaults(case.get("options"))
    out_cfg = case["output"]
    W, H = int(case["source"]["width"]), int(case["source"]["height"])
    w, h = int(case["input"]["width"]), int(case["input"]["height"])
    tf = make_transform(W, H, w, h, case["input"]["resize"])
    cands, nms_enabled = decode(case["kind"], tensors, out_cfg, int(case["labels"]), w, h, float(o["score_threshold"]))
    if diag is not None:
        diag["candidates"] = cands
    dets = postprocess(cands, tf, o, nms_enabled, diag)
    masks = None
    if case["kind"] == "odapi" and out_cfg.get("masks"):
        masks = np.asarray(tensors[out_cfg["masks"]], dtype=np.float64)[0]
    res = []
    for d in dets:
        r = {"class": d.cls, "score": d.score, "box": list(d.box)}
        if masks is not None:
            bm = paste_mask(masks[d.mask_row], d.mapped, W, H, float(o["mask_threshold"]), diag)
            r["mask"] = rle_encode(bm)
        res.append(r)
    return res


def output_keys(case: dict) -> list[str]:
    """The tensor keys a case's decode reads."""
    o = case["output"]
    k = case["kind"]
    if k == "yolo":
        return list(o["grids"])
    if k == "odapi":
        keys = [o["boxes"], o["scores"], o["classes"], o["num_detections"]]
        return keys + ([o["masks"]] if o.get("masks") else [])
    if k == "rows":
        return [o["detections"]]
    if k == "anchorfree":
        return [o["predictions"]]
    raise ValueError(k)


def load_case(case_dir: str) -> tuple[dict, dict]:
    with open(os.path.join(case_dir, "case.json")) as f:
        case = json.load(f)
    tensors = {k: np.load(os.path.join(case_dir, f"output_{k}.npy")) for k in output_keys(case)}
    return case, tensors


# ---------------------------------------------------------- average precision


def _match(dets, gts, iou_thr: float, matching: str):
    """TP flags for dets (sorted by score desc, stable) against gts, one class.

    coco: each detection takes the unmatched ground truth of its image with the
          highest IoU >= iou_thr (COCOeval; ties go to the later ground truth).
    voc:  each detection looks at the ground truth with the highest IoU (first on
          ties); TP if IoU >= iou_thr and that one is not yet matched, else FP.
    """
    by_img: dict = {}
    for g in gts:
        by_img.setdefault(g[0], []).append(np.asarray(g[1], np.float64))
    used = {k: np.zeros(len(v), bool) for k, v in by_img.items()}
    scores = np.asarray([d[1] for d in dets], np.float64)
    idx = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(dets), bool)
    for r, i in enumerate(idx):
        img, _, box = dets[i]
        g = by_img.get(img)
        if not g:
            continue
        ious = np.asarray([iou(box, gb) for gb in g])
        if matching == "coco":
            best, m = iou_thr, -1
            for j, v in enumerate(ious):
                if used[img][j] or v < best:
                    continue
                best, m = v, j
            if m >= 0:
                used[img][m] = True
                tp[r] = True
        elif matching == "voc":
            j = int(np.argmax(ious))
            if ious[j] >= iou_thr and not used[img][j]:
                used[img][j] = True
                tp[r] = True
        else:
            raise ValueError(f"unknown matching {matching!r}")
    return tp


def precision_recall(dets, gts, iou: float = 0.5, matching: str = "coco"):
    """(precision, recall) arrays over the detections in score order."""
    tp = _match(list(dets), list(gts), iou, matching)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    n = len(gts)
    rec = ctp / n if n else np.zeros(len(tp))
    prec = ctp / np.maximum(ctp + cfp, 1)
    return prec, rec


def average_precision(dets, gts, iou: float = 0.5, interpolation: str = "all", matching: str = "coco") -> float:
    """AP of one class at one IoU threshold.

    dets: iterable of (image_id, score, box); gts: iterable of (image_id, box);
    boxes (x1, y1, x2, y2). A detection is a TP when matched with IoU >= iou.
    interpolation "all": area under the precision envelope at every recall
    change (PASCAL VOC 2010+ "all points"); "coco101": mean of the envelope at
    recall 0, 0.01, ..., 1 (COCOeval); "voc11": the same at 0, 0.1, ..., 1
    (VOC2007). NaN when there is no ground truth. Ties in score keep input order.
    """
    dets, gts = list(dets), list(gts)
    if not gts:
        return float("nan")
    prec, rec = precision_recall(dets, gts, iou, matching)
    if interpolation == "all":
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ch = np.nonzero(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[ch + 1] - mrec[ch]) * mpre[ch + 1]))
    if interpolation == "coco101":
        env = prec.copy()
        for i in range(len(env) - 2, -1, -1):
            env[i] = max(env[i], env[i + 1])
        thr = np.linspace(0.0, 1.0, 101)
        pos = np.searchsorted(rec, thr, side="left")
        q = np.zeros(len(thr))
        for ri, pi in enumerate(pos):
            if pi < len(env):
                q[ri] = env[pi]
        return float(np.mean(q))
    if interpolation == "voc11":
        return float(np.mean([np.max(prec[rec >= t], initial=0.0) for t in np.linspace(0.0, 1.0, 11)]))
    raise ValueError(f"unknown interpolation {interpolation!r}")


def mean_ap(dets, gts, iou: float = 0.5, interpolation: str = "all", matching: str = "coco",
            classes=None) -> tuple[float, dict]:
    """mAP over classes. dets: (image_id, class, score, box); gts: (image_id, class, box).

    Classes without ground truth are left out of the mean (their AP is NaN).
    Returns (mAP, {class: AP}).
    """
    dets, gts = list(dets), list(gts)
    if classes is None:
        classes = sorted({d[1] for d in dets} | {g[1] for g in gts})
    per = {}
    for k in classes:
        per[k] = average_precision(
            [(d[0], d[2], d[3]) for d in dets if d[1] == k],
            [(g[0], g[2]) for g in gts if g[1] == k], iou, interpolation, matching)
    vals = [v for v in per.values() if not math.isnan(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per
