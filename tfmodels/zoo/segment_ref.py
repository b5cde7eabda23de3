"""Independent numpy reference of the segmentation post-processing of plugins/segment.

Written from edgeinfer's segment spec (plugins/segment/README.md: what a
segmentation model's raw output becomes) with its own algorithms, apart from
the Go code: whole-array numpy (every pixel interpolated, no shortcut),
scipy.ndimage.label for the connected components (the Go code uses
union-find over runs) and pycocotools for the RLE (the Go code
masks.Encode), both imported lazily.

Everything is float64 and batch 1. The raw output is [1, h, w, n] (model
pixels); the frame is W x H (frame pixels). A model with n > 1 channels has
one channel per label (multi-class logits or probabilities); n == 1 is a
single-channel foreground mask (one label).

Pipeline (`segment`):

    sanitize        NaN -> -FLT_MAX, then clip to [-FLT_MAX, FLT_MAX] (so +-Inf
                    -> +-FLT_MAX): a NaN is the lowest value there is, and
                    interpolation stays finite. FLT_MAX is float32's largest.
    resize          frame pixel x samples the model at
                      nearest:  column floor((x + 0.5) * w / W)  (the model pixel
                                whose span holds the frame pixel's centre)
                      bilinear: u = (x + 0.5) * w / W - 0.5, between columns
                                floor(u) and floor(u) + 1 at fraction u - floor(u),
                                both clamped to [0, w - 1] (half-pixel centres,
                                as tf.image.resize(bilinear) and the detect masks)
                    and likewise for rows.
    class map       multi-class: argmax over the channels (ties: the lowest
                    class), of the model pixel (nearest) or of the channels
                    interpolated at the frame pixel (bilinear, on the raw values,
                    before the argmax).
                    single channel: 1 (foreground) where p >= threshold, else 0;
                    p = the value (softmax = false: a probability) or
                    sigmoid(value) (softmax = true: a logit), of the model pixel
                    (nearest) or of the interpolated raw value (bilinear).
    regions         per published class (multi-class: every class not in
                    ignore_classes; single channel: the foreground, as class 0
                    with the model's one label): its connected components
                    (4- or 8-connectivity); a component of fewer than min_area
                    pixels is dropped (per component). What is left is the
                    class's mask: pixels, share = pixels / (W * H), box
                    (x1, y1, x2, y2) with x2, y2 exclusive, component count, and
                    COCO RLE of the mask. Classes left with no pixels are not
                    published.
    alerts          for every label in options["alerts"] that is published with
                    share >= its threshold: {"label", "share", "threshold"}.
"""
from __future__ import annotations

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)

DEFAULT_OPTIONS = {
    "resize": "nearest",
    "threshold": 0.5,
    "ignore_classes": [],
    "min_area": 0.0,
    "connectivity": 8,
    "alerts": {},
    "masks": True,
}


# --------------------------------------------------------------- arithmetic


def sanitize(raw):
    """float64 copy of raw with NaN -> -FLT_MAX and everything clipped to +-FLT_MAX."""
    x = np.asarray(raw, dtype=np.float64)
    x = np.where(np.isnan(x), -FLT_MAX, x)
    return np.clip(x, -FLT_MAX, FLT_MAX)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def nearest_index(frame_n: int, model_n: int):
    """For each of frame_n frame pixels along an axis, the model pixel whose span
    [i * frame_n / model_n, (i + 1) * frame_n / model_n) holds its centre."""
    centre = (np.arange(frame_n, dtype=np.float64) + 0.5) * model_n / frame_n
    return np.minimum(np.floor(centre).astype(np.int64), model_n - 1)


def bilinear_axis(frame_n: int, model_n: int):
    """Per frame pixel along an axis: (lo, hi, frac), half-pixel centres, clamped."""
    u = (np.arange(frame_n, dtype=np.float64) + 0.5) * model_n / frame_n - 0.5
    f = np.floor(u)
    frac = u - f
    lo = f.astype(np.int64)
    hi = lo + 1
    lo = np.clip(lo, 0, model_n - 1)
    hi = np.clip(hi, 0, model_n - 1)
    return lo, hi, frac


def resize_bilinear(v, W: int, H: int):
    """[h, w, c] -> [H, W, c], bilinear with half-pixel centres (float64)."""
    h, w = v.shape[:2]
    xl, xh, xf = bilinear_axis(W, w)
    yl, yh, yf = bilinear_axis(H, h)
    xf = xf[None, :, None]
    yf = yf[:, None, None]
    tl = v[yl][:, xl]
    tr = v[yl][:, xh]
    bl = v[yh][:, xl]
    br = v[yh][:, xh]
    top = tl * (1 - xf) + tr * xf
    bot = bl * (1 - xf) + br * xf
    return top * (1 - yf) + bot * yf


def resize_nearest(v, W: int, H: int):
    h, w = v.shape[:2]
    return v[nearest_index(H, h)][:, nearest_index(W, w)]


# ---------------------------------------------------------------- class map


def corners_all(pred, W: int, H: int):
    """[H, W] bool: pred ([h, w] bool) holds at every bilinear corner of nonzero
    weight of each frame pixel."""
    h, w = pred.shape
    xl, xh, xf = bilinear_axis(W, w)
    yl, yh, yf = bilinear_axis(H, h)
    out = np.ones((H, W), bool)
    for ys, wy in ((yl, 1 - yf), (yh, yf)):
        for xs, wx in ((xl, 1 - xf), (xh, xf)):
            out &= pred[ys][:, xs] | (wy[:, None] * wx[None, :] == 0)
    return out


def class_map(raw, W: int, H: int, softmax: bool, options: dict, diag: dict | None = None):
    """The H x W class map (int64) of a raw [1, h, w, n] output, and the number of
    NaN values in it. diag, when given, receives what decisions hang on:
    "gap" and "best" (bilinear multi-class: the best minus the second-best
    interpolated value per frame pixel, and the best; "tie_exact" where a zero gap
    comes from equal corners) or "margin" (single channel, softmax or bilinear:
    |p - threshold| per frame pixel; "margin_exact" where p is exactly 0.5 from
    zero logits)."""
    raw = np.asarray(raw)
    if raw.ndim == 4:
        assert raw.shape[0] == 1, raw.shape
        raw = raw[0]
    h, w, n = raw.shape
    assert h >= 1 and w >= 1 and n >= 1
    nan = int(np.isnan(raw).sum())
    v = sanitize(raw)
    resize = options["resize"]
    if n == 1:
        thr = float(options["threshold"])
        if resize == "nearest":
            x = resize_nearest(v, W, H)[..., 0]
        else:
            x = resize_bilinear(v, W, H)[..., 0]
        p = sigmoid(x) if softmax else x
        if diag is not None and (softmax or resize == "bilinear"):
            diag["margin"] = np.abs(p - thr)
            # sigmoid(0) = 0.5 exactly: a zero logit, or zeros at every corner
            # that weighs, is exact in any implementation
            zero = v[..., 0] == 0
            if resize == "nearest":
                exact = resize_nearest(zero[..., None], W, H)[..., 0]
            else:
                exact = corners_all(zero, W, H)
            diag["margin_exact"] = exact & softmax
        return (p >= thr).astype(np.int64), nan
    if resize == "nearest":
        return np.argmax(resize_nearest(v, W, H), axis=-1).astype(np.int64), nan
    vi = resize_bilinear(v, W, H)
    cm = np.argmax(vi, axis=-1).astype(np.int64)
    if diag is not None:
        s = np.sort(vi, axis=-1)
        diag["gap"] = s[..., -1] - s[..., -2]
        diag["best"] = s[..., -1]
        # a zero gap is fine when the two best classes have equal values at every
        # corner of nonzero weight (then the same arithmetic gives the same value
        # for both, and the tie goes to the lowest class whatever the rounding)
        second = np.argsort(-vi, axis=-1, kind="stable")[..., 1]
        xl, xh, xf = bilinear_axis(W, w)
        yl, yh, yf = bilinear_axis(H, h)
        eq = np.ones((H, W), bool)
        for ys, wy in ((yl, 1 - yf), (yh, yf)):
            for xs, wx in ((xl, 1 - xf), (xh, xf)):
                c = v[ys][:, xs]  # [H, W, n]
                a = np.take_along_axis(c, cm[..., None], -1)[..., 0]
                b = np.take_along_axis(c, second[..., None], -1)[..., 0]
                eq &= (a == b) | (wy[:, None] * wx[None, :] == 0)
        diag["tie_exact"] = eq
    return cm, nan


# ------------------------------------------------------------------ regions


def structure(connectivity: int):
    if connectivity == 4:
        return np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    if connectivity == 8:
        return np.ones((3, 3), int)
    raise ValueError(f"connectivity {connectivity}")


def region(mask, min_area: float, connectivity: int):
    """The mask without its components of fewer than min_area pixels, and the
    number of components kept."""
    from scipy import ndimage

    lab, k = ndimage.label(mask, structure=structure(connectivity))
    if k == 0:
        return np.zeros_like(mask, bool), 0
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    keep = sizes >= min_area
    keep[0] = False
    return keep[lab], int(keep[1:].sum())


def rle(mask):
    """COCO compressed RLE of a bool H x W mask (pycocotools)."""
    from pycocotools import mask as M

    r = M.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def summarize(cmap, labels, options: dict, single: bool):
    """The published classes and the alerts of a class map."""
    H, W = cmap.shape
    ignore = set(options.get("ignore_classes") or [])
    classes = []
    if single:
        todo = [(0, cmap == 1)]
    else:
        todo = [(c, cmap == c) for c in range(len(labels))]
    for c, m in todo:
        if labels[c] in ignore or not m.any():
            continue
        kept, ncomp = region(m, float(options["min_area"]), int(options["connectivity"]))
        px = int(kept.sum())
        if px == 0:
            continue
        ys, xs = np.nonzero(kept)
        e = {
            "label": labels[c],
            "class": c,
            "share": px / (W * H),
            "pixels": px,
            "box": {"x1": int(xs.min()), "y1": int(ys.min()), "x2": int(xs.max()) + 1, "y2": int(ys.max()) + 1},
            "components": ncomp,
        }
        if options.get("masks", True):
            e["mask"] = rle(kept)
        classes.append(e)
    alerts = []
    by_label = {e["label"]: e for e in classes}
    for c, label in enumerate(labels):
        thr = (options.get("alerts") or {}).get(label)
        if thr is not None and label in by_label and by_label[label]["share"] >= thr:
            alerts.append({"label": label, "share": by_label[label]["share"], "threshold": float(thr)})
    return classes, alerts


def segment(raw, W: int, H: int, labels, softmax: bool, options: dict | None = None, diag: dict | None = None):
    """The whole post-processing: (result dict, class map)."""
    o = dict(DEFAULT_OPTIONS)
    o.update(options or {})
    raw = np.asarray(raw)
    n = raw.shape[-1]
    if n != len(labels):
        raise ValueError(f"{n} channels for {len(labels)} labels")
    cmap, nan = class_map(raw, W, H, softmax, o, diag)
    classes, alerts = summarize(cmap, list(labels), o, single=(n == 1))
    out = {"classes": classes, "alerts": alerts, "width": int(W), "height": int(H)}
    if nan:
        out["nan_values"] = nan
    return out, cmap
