"""Generate the detection decode test cases of plugins/detect.

    cd /work/main && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python \
        plugins/detect/testdata/make_cases.py models plugins/detect/testdata/cases [MODELS_REAL_DIR]

Raw outputs come from real model runs (MODELS_DIR/yolov3, faster_rcnn, mask_rcnn;
centernet from MODELS_DIR/centernet or MODELS_REAL_DIR/centernet, default the
sibling models-real/; a tiny TF function when it is absent; a tiny random Keras
net for the anchor-free head); the expected detections come from the numpy
reference tfmodels/zoo/detect_ref.py. See README.md in this directory for the
case format. Deterministic (seeded); rewrites OUT_DIR/<kind>-<NN>/ only.

Every case is checked to be well conditioned: no computed quantity that a
comparison depends on (a YOLO score against the threshold or against another
score, an IoU against nms_threshold, an area against min_area, a bilinear mask
sample against mask_threshold, a pixel centre against a mask box edge) lies
within EPS of the other side, so an implementation that rounds differently in
the last bits still produces the same detections. An ill-conditioned case is
regenerated from the next image.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfmodels.zoo import detect_ref as R  # noqa: E402

EPS = 1e-9
SOURCES = [(640, 480), (300, 500), (1280, 720), (192, 101), (50, 400), (1000, 1000)]


# ------------------------------------------------------------------ helpers


def opts(**kw):
    o = dict(R.DEFAULT_OPTIONS)
    o["min_area"] = 0.0
    o.update(kw)
    return o


def manifest(model_dir):
    with open(os.path.join(model_dir, "1", "edgeinfer.toml"), "rb") as f:
        return tomllib.load(f)


def load_signature(model_dir):
    import tensorflow as tf

    return tf.saved_model.load(os.path.join(model_dir, "1")).signatures["serving_default"]


def run(sig, key, batch):
    """Run a signature on a batch (one call), return [{key: [1, ...] float32}] per image."""
    import tensorflow as tf

    out = sig(**{key: tf.constant(np.asarray(batch, np.float32))})
    out = {k: v.numpy().astype(np.float32) for k, v in out.items()}
    return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(batch))]


def synth_image(rng, W, H, style="shapes", cap=256):
    """A source frame, H x W x 3 in 0..1: noise, or shapes on a gradient. Frames
    larger than `cap` on a side are made at a reduced size with the same aspect
    ratio (the models see them through a <= 128 px input anyway)."""
    k = min(1.0, cap / max(W, H))
    W, H = max(int(round(W * k)), 1), max(int(round(H * k)), 1)
    if style == "noise":
        return rng.uniform(0, 1, (H, W, 3)).astype(np.float32)
    c0, c1 = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    t = (np.arange(W, dtype=np.float32)[None, :] / max(W - 1, 1) * 0.5
         + np.arange(H, dtype=np.float32)[:, None] / max(H - 1, 1) * 0.5)[..., None]
    img = c0 * (1 - t) + c1 * t
    img += rng.uniform(-0.05, 0.05, (H, W, 1)).astype(np.float32)
    for _ in range(int(rng.integers(2, 9))):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        rw, rh = rng.uniform(0.05, 0.35) * W, rng.uniform(0.05, 0.35) * H
        col = rng.uniform(0, 1, 3).astype(np.float32)
        x0, x1 = int(max(cx - rw / 2, 0)), int(min(cx + rw / 2 + 1, W))
        y0, y1 = int(max(cy - rh / 2, 0)), int(min(cy + rh / 2 + 1, H))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        if rng.uniform() < 0.5:
            m = (np.abs(xx - cx) < rw / 2) & (np.abs(yy - cy) < rh / 2)
        else:
            m = ((xx - cx) / (rw / 2)) ** 2 + ((yy - cy) / (rh / 2)) ** 2 < 1
        img[y0:y1, x0:x1][m] = col
    return np.clip(img, 0, 1)


def to_input(img, tfm: R.Transform):
    """Source frame -> model input by the transform (nearest neighbour; letterbox pads
    with 0.5). img may be a reduced-size rendering of the W x H frame."""
    W, H = tfm.src_w, tfm.src_h
    ih, iw = img.shape[:2]
    out = np.full((tfm.in_h, tfm.in_w, 3), 0.5, np.float32)
    sx = (np.arange(tfm.in_w) + 0.5 - tfm.pad_x) / tfm.sx
    sy = (np.arange(tfm.in_h) + 0.5 - tfm.pad_y) / tfm.sy
    xi = np.nonzero((sx >= 0) & (sx < W))[0]
    yi = np.nonzero((sy >= 0) & (sy < H))[0]
    px = np.minimum(np.floor(sx[xi] * iw / W).astype(int), iw - 1)
    py = np.minimum(np.floor(sy[yi] * ih / H).astype(int), ih - 1)
    out[np.ix_(yi, xi)] = img[py[:, None], px[None, :]]
    return out


def base_case(kind, src, inp, resize, labels, output, options, note, model):
    return {
        "kind": kind,
        "model": model,
        "note": note,
        "source": {"width": int(src[0]), "height": int(src[1])},
        "input": {"width": int(inp[0]), "height": int(inp[1]), "resize": resize},
        "labels": int(labels),
        "output": output,
        "options": options,
    }


# ------------------------------------------------------------- conditioning


def yolo_margins(case, tensors):
    out = case["output"]
    C = case["labels"]
    B = len(out["anchor_masks"]) // len(out["grids"])
    thr = case["options"]["score_threshold"]
    m = [np.inf]
    for key in out["grids"]:
        t = np.asarray(tensors[key], np.float64).reshape(-1, 5 + C)
        with np.errstate(all="ignore"):
            s = R.sigmoid(t[:, 4:5]) * R.sigmoid(t[:, 5:])
        fin = np.isfinite(s)
        m.append(np.min(np.abs(s[fin] - thr), initial=np.inf))
        if C > 1:  # the best class must not be decided by the last bits
            ss = np.sort(np.where(fin & (s >= thr), s, -1.0), axis=1)
            gap = ss[:, -1] - ss[:, -2]
            ok = (ss[:, -2] >= thr) & (gap > 0)
            m.append(np.min(gap[ok], initial=np.inf))
    return min(m)


def margin(case, tensors, diag):
    o = case["options"]
    m = [np.inf]
    if case["kind"] == "yolo":
        m.append(yolo_margins(case, tensors))
        sc = np.unique(diag.get("nms_scores", np.zeros(0)))
        if len(sc) > 1:  # distinct computed scores must stay ordered
            m.append(np.min(np.diff(sc)))
    ious = diag.get("ious", np.zeros(0))
    ious = ious[ious != 0.0]  # exact 0: no overlap (decided by coordinates, not by the division)
    if len(ious) and o["nms_threshold"] < 1.0:  # computed IoU never exceeds 1
        m.append(np.min(np.abs(ious - o["nms_threshold"])))
    if o["min_area"] and len(diag.get("areas", [])):
        m.append(np.min(np.abs(diag["areas"] - o["min_area"])))
    for key in ("mask", "edge"):
        for a in diag.get(key, []):
            if len(a):
                m.append(np.min(a))
    return float(min(m))


# ------------------------------------------------------------------- writer


class Writer:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = {}
        self.rejected = 0
        self.summary = []

    def emit(self, case, tensors):
        """Write the case if well conditioned; return whether it was written."""
        diag = {}
        expected = R.detect(case, tensors, diag)
        mg = margin(case, tensors, diag)
        if mg < EPS:
            self.rejected += 1
            print(f"  regenerating ({case['kind']}: {case['note']}): margin {mg:.3g}", file=sys.stderr)
            return False
        kind = case["kind"]
        n = self.count.get(kind, 0)
        self.count[kind] = n + 1
        d = os.path.join(self.out_dir, f"{kind}-{n:02d}")
        os.makedirs(d)
        for k in R.output_keys(case):
            np.save(os.path.join(d, f"output_{k}.npy"), np.asarray(tensors[k], np.float32))
        case = dict(case, expected=expected)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
        ncand = len(diag["candidates"])
        self.summary.append(f"{kind}-{n:02d}: {ncand} candidates -> {len(expected)} detections  ({case['note']})")
        return True

    def emit_first(self, makers):
        """makers: iterable of zero-arg functions returning (case, tensors); the first
        well-conditioned one is written."""
        for mk in makers:
            c, t = mk()
            if self.emit(c, t):
                return
        raise RuntimeError("no well-conditioned variant for case: " + c["note"])


# --------------------------------------------------------------------- yolo


def gen_yolo(w: Writer, models_dir):
    mdir = os.path.join(models_dir, "yolov3")
    man = manifest(mdir)
    inp = (man["input"]["width"], man["input"]["height"])
    C = len(man["labels"])
    out = {k: man["output"][k] for k in ("grids", "strides", "anchors", "anchor_masks")}
    specs = [
        ((640, 480), "letterbox", opts(), "defaults"),
        ((640, 480), "stretch", opts(max_detections=300), "stretch, max_detections 300"),
        ((300, 500), "letterbox", opts(score_threshold=0.7), "portrait letterbox, score_threshold 0.7"),
        (inp, "stretch", opts(), "source = input"),
        ((1280, 720), "letterbox", opts(class_agnostic=True), "class_agnostic"),
        ((300, 500), "stretch", opts(score_threshold=0.5), "score_threshold 0.5"),
        ((640, 480), "letterbox", opts(nms_threshold=0.3, score_threshold=0.6, max_detections=300), "nms_threshold 0.3, score 0.6"),
        ((640, 480), "letterbox", opts(classes=[0, 2]), "class filter [0, 2]"),
        ((640, 480), "letterbox", opts(min_area=900.0, score_threshold=0.6), "min_area 900, score 0.6"),
        ((640, 480), "letterbox", opts(max_detections=5), "max_detections 5"),
        ((192, 101), "letterbox", opts(), "letterbox rounding: nh = round(50.5) = 51"),
        ((50, 400), "letterbox", opts(score_threshold=0.4), "narrow source"),
        ((640, 480), "stretch", opts(score_threshold=0.1, nms_threshold=0.7), "many candidates"),
        ((1000, 1000), "letterbox", opts(classes=[1], min_area=400.0), "class filter [1] + min_area"),
        ((640, 480), "stretch", opts(nms_threshold=0.0), "nms_threshold 0: any overlap suppresses"),
        ((640, 480), "letterbox", opts(nms_threshold=1.0, score_threshold=0.5, max_detections=1000), "nms_threshold 1: nothing suppressed"),
        ((96, 48), "letterbox", opts(max_detections=1, class_agnostic=True), "max_detections 1, agnostic"),
        ((640, 480), "letterbox", opts(score_threshold=0.05), "score_threshold 0.05 (stress)"),
        ((300, 500), "stretch", opts(class_agnostic=True, nms_threshold=0.6, score_threshold=0.75), "agnostic, nms 0.6, score 0.75"),
        ((1280, 720), "stretch", opts(min_area=5000.0, max_detections=20), "min_area 5000, max 20"),
        ((640, 480), "letterbox", opts(score_threshold=0.999), "edge: zero candidates above threshold"),
        ((640, 480), "letterbox", opts(), "edge: NaN/Inf in box and objectness logits"),
        ((640, 480), "stretch", opts(), "edge: NaN class logit (score NaN -> dropped), +Inf class logit (p = 1)"),
        ((640, 480), "letterbox", opts(), "edge: huge tw/th (boxes far beyond the frame, clipped)"),
    ]
    spares = 10
    rng = np.random.default_rng(1001)
    frames = []
    for i in range(len(specs) + spares):
        src, resize = specs[i % len(specs)][:2]
        style = "noise" if i % 3 == 0 else "shapes"
        img = synth_image(rng, *src, style=style)
        frames.append(to_input(img, R.make_transform(*src, *inp, resize)))
    raws = run(load_signature(mdir), man["input"]["key"], frames)
    nxt = [len(specs)]

    def raw_for(i, attempt):
        if attempt == 0:
            return {k: v.copy() for k, v in raws[i].items()}
        j = nxt[0]
        nxt[0] += 1
        return {k: v.copy() for k, v in raws[j % len(raws)].items()}

    B = len(out["anchor_masks"]) // len(out["grids"])
    D = 5 + C

    def mutate(i, t, note):
        g = t[out["grids"][0]]  # [1, gh, gw, B*D]
        r = np.random.default_rng(i)
        cells = [(int(r.integers(g.shape[1])), int(r.integers(g.shape[2])), int(r.integers(B))) for _ in range(12)]
        if "box and objectness" in note:
            for n, (cy, cx, b) in enumerate(cells):
                o = b * D
                g[0, cy, cx, o + 4] = 3.0  # make sure the candidate would pass
                g[0, cy, cx, o + 5] = 3.0
                v = [(0, np.nan), (2, np.inf), (4, np.nan), (0, np.inf), (2, -np.inf), (4, np.inf)][n % 6]
                g[0, cy, cx, o + v[0]] = v[1]
                if n % 6 == 5:
                    g[0, cy, cx, o + 3] = -np.inf  # bh = 0 and obj = 1: a finite, zero-height box
        elif "NaN class" in note:
            for n, (cy, cx, b) in enumerate(cells):
                o = b * D
                g[0, cy, cx, o + 4] = 3.0
                g[0, cy, cx, o + 5 + n % C] = np.nan if n % 2 == 0 else np.inf
        elif "huge" in note:
            for n, (cy, cx, b) in enumerate(cells):
                o = b * D
                g[0, cy, cx, o + 4] = 3.0
                g[0, cy, cx, o + 5] = 4.0
                g[0, cy, cx, o + 2] = 6.0 + n % 3  # bw = aw * e^6..e^8
                g[0, cy, cx, o + 3] = 5.0 + n % 4
        return t

    for i, (src, resize, o, note) in enumerate(specs):
        def mk(i=i, src=src, resize=resize, o=o, note=note, attempt=[0]):
            t = mutate(i, raw_for(i, attempt[0]), note)
            attempt[0] += 1
            return base_case("yolo", src, inp, resize, C, out, o, note, "yolov3"), t
        w.emit_first([mk] * (spares + 1))


# -------------------------------------------------------------------- odapi


def gen_odapi(w: Writer, models_dir):
    for name, specs in (("faster_rcnn", ODAPI_FASTER), ("mask_rcnn", ODAPI_MASK)):
        mdir = os.path.join(models_dir, name)
        man = manifest(mdir)
        inp = (man["input"]["width"], man["input"]["height"])
        C = len(man["labels"])
        keys = ("boxes", "scores", "classes", "num_detections", "masks", "label_offset")
        out = {k: man["output"][k] for k in keys if k in man["output"]}
        spares = 8
        rng = np.random.default_rng(2002 if name == "faster_rcnn" else 3003)
        frames = []
        for i in range(len(specs) + spares):
            src, resize = specs[i % len(specs)][:2]
            img = synth_image(rng, *src, style="noise" if i % 4 == 0 else "shapes")
            frames.append(to_input(img, R.make_transform(*src, *inp, resize)))
        raws = run(load_signature(mdir), man["input"]["key"], frames)
        nxt = [len(specs)]
        for i, (src, resize, o, note) in enumerate(specs):
            def mk(i=i, src=src, resize=resize, o=o, note=note, attempt=[0]):
                j = i
                if attempt[0]:
                    j = nxt[0] % len(raws)
                    nxt[0] += 1
                attempt[0] += 1
                t = {k: v.copy() for k, v in raws[j].items()}
                odapi_mutate(i, t, out, note)
                return base_case("odapi", src, inp, resize, C, out, o, note, name), t
            w.emit_first([mk] * (spares + 1))


ODAPI_FASTER = [
    ((128, 128), "stretch", opts(), "source = input"),
    ((640, 480), "stretch", opts(), "stretch"),
    ((640, 480), "letterbox", opts(), "letterbox"),
    ((300, 500), "letterbox", opts(score_threshold=0.5), "score_threshold 0.5"),
    ((640, 480), "stretch", opts(classes=[1]), "class filter [1]"),
    ((640, 480), "stretch", opts(min_area=25000.0), "min_area 25000"),
    ((1280, 720), "letterbox", opts(max_detections=4), "max_detections 4"),
    ((640, 480), "stretch", opts(class_agnostic=True, nms_threshold=0.1), "class_agnostic: suppression across classes on top of the model's own"),
    ((192, 101), "letterbox", opts(), "letterbox rounding"),
    ((640, 480), "stretch", opts(), "num_detections edited to 7.9: int() -> 7, rows 7.. are not read"),
    ((640, 480), "stretch", opts(score_threshold=0.9), "edge: zero candidates above threshold"),
    ((640, 480), "letterbox", opts(), "edge: NaN/Inf in boxes and scores"),
    ((640, 480), "stretch", opts(), "edge: class values edited: 0 and 4 (out of range), 2.5 -> 3 - 1 = 2, 1.4999 -> 0"),
]
ODAPI_MASK = [
    ((128, 128), "stretch", opts(), "masks, source = input"),
    ((640, 480), "stretch", opts(), "masks, stretch"),
    ((640, 480), "letterbox", opts(mask_threshold=0.3), "masks, letterbox, mask_threshold 0.3"),
    ((300, 500), "letterbox", opts(mask_threshold=0.6), "masks, portrait, mask_threshold 0.6"),
    ((320, 240), "stretch", opts(min_area=6000.0), "masks, min_area 6000"),
    ((640, 480), "stretch", opts(max_detections=3), "masks, max_detections 3"),
    ((500, 300), "letterbox", opts(classes=[2]), "masks, class filter [2]"),
    ((192, 101), "letterbox", opts(), "masks, letterbox rounding"),
    ((640, 480), "stretch", opts(score_threshold=0.5), "masks, score_threshold 0.5"),
    ((400, 400), "stretch", opts(), "masks, num_detections edited to 5.0"),
    ((640, 480), "stretch", opts(), "edge: boxes far outside / partly outside the frame (masks span the unclipped box)"),
    ((640, 480), "letterbox", opts(), "edge: NaN/Inf in boxes and scores, masks"),
]


def odapi_mutate(i, t, out, note):
    b, s, c, n = t[out["boxes"]], t[out["scores"]], t[out["classes"]], t[out["num_detections"]]
    N = b.shape[1]
    if "num_detections edited to 7.9" in note:
        n[0] = 7.9
    elif "num_detections edited to 5" in note:
        n[0] = 5.0
    elif "NaN/Inf" in note:
        b[0, 0, 1] = np.nan
        b[0, 2, 3] = np.inf
        b[0, 4, 0] = -np.inf
        s[0, 1] = np.nan
        s[0, 3] = np.inf
        s[0, 5] = -np.inf
        c[0, 6] = np.nan
    elif "class values edited" in note:
        c[0, 0], c[0, 1], c[0, 2], c[0, 3] = 0.0, 4.0, 2.5, 1.4999
    elif "far outside" in note:
        b[0, 0] = [-3.0, -2.0, -1.0, -0.5]  # fully outside (above-left)
        b[0, 1] = [0.5, 0.5, 2.5, 3.0]  # partly outside
        b[0, 2] = [5.0, 5.0, 6.0, 6.0]  # fully outside (below-right)
        b[0, 3] = [-0.25, -0.5, 0.75, 0.5]  # straddles the top-left corner
        s[0, :4] = [0.99, 0.98, 0.97, 0.96]
    assert b.shape[1] == N


# --------------------------------------------------------------------- rows


def make_rows_fn(C, pool, seed):
    """A tiny TF function: image [1, h, w, 3] (0..1) -> rows [1, (h/pool)*(w/pool), 6]
    = x1, y1, x2, y2 (input pixels), score (>= 0.25), class (float)."""
    import tensorflow as tf

    r = np.random.default_rng(seed)
    Wm = tf.constant(r.normal(0, 2.0, (3, 6)).astype(np.float32))
    bm = tf.constant(np.array([0, 0, 0, 0, -1, 0], np.float32))
    fr = tf.constant(r.uniform(0.1, 0.9, 6).astype(np.float32))

    @tf.function
    def f(img):
        p = tf.nn.avg_pool2d(img, pool, pool, "VALID")
        gh, gw = tf.shape(p)[1], tf.shape(p)[2]
        cols = tf.cast(tf.range(gw), tf.float32)[None, None, :, None]
        rows = tf.cast(tf.range(gh), tf.float32)[None, :, None, None]
        t = tf.einsum("bhwc,cd->bhwd", p, Wm) + bm + tf.sin(cols * fr) + tf.cos(rows * fr)
        cx = (cols[..., 0] + tf.sigmoid(t[..., 0])) * pool
        cy = (rows[..., 0] + tf.sigmoid(t[..., 1])) * pool
        bw = pool * 2.5 * tf.exp(0.5 * t[..., 2])
        bh = pool * 2.5 * tf.exp(0.5 * t[..., 3])
        score = 0.25 + 0.75 * tf.sigmoid(t[..., 4])
        cls = tf.minimum(tf.floor(tf.sigmoid(t[..., 5]) * C), C - 1)
        out = tf.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, score, cls], axis=-1)
        return tf.reshape(out, [1, -1, 6])

    return f


ROW_LAYOUTS = {
    # name: (columns in order, using "x1 y1 x2 y2" placeholders "b0..b3", "s", "c", "j" junk)
    "std": ["b0", "b1", "b2", "b3", "s", "c"],
    "cls_first": ["c", "s", "b0", "b1", "b2", "b3"],
    "extra": ["j", "b0", "b1", "b2", "b3", "c", "s", "j"],
}


def rows_transform(xyxy_rows, fmt, units, layout, label_offset, in_w, in_h, rng):
    """Real (x1, y1, x2, y2, score, class) pixel rows -> another format/units/column order."""
    r = np.asarray(xyxy_rows, np.float64)
    x1, y1, x2, y2, s, c = (r[:, i] for i in range(6))
    if fmt == "xyxy":
        b = [x1, y1, x2, y2]
    elif fmt == "yxyx":
        b = [y1, x1, y2, x2]
    else:
        b = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    if units == "normalized":
        sc = [in_w, in_h, in_w, in_h] if fmt != "yxyx" else [in_h, in_w, in_h, in_w]
        b = [v / k for v, k in zip(b, sc)]
    cols = []
    for name in ROW_LAYOUTS[layout]:
        if name == "s":
            cols.append(s)
        elif name == "c":
            cols.append(c + label_offset)
        elif name == "j":
            cols.append(rng.uniform(-5, 5, len(r)))
        else:
            cols.append(b[int(name[1])])
    spec = ROW_LAYOUTS[layout]
    out = {
        "box_column": spec.index("b0"),
        "box_format": fmt,
        "box_units": units,
        "score_column": spec.index("s"),
        "class_column": spec.index("c"),
        "label_offset": int(label_offset),
    }
    return np.stack(cols, axis=1).astype(np.float32)[None], out


def gen_rows(w: Writer, models_dir, real_dir):
    cn = None
    for d in (os.path.join(models_dir, "centernet"), os.path.join(real_dir, "centernet") if real_dir else None):
        if d and os.path.isfile(os.path.join(d, "1", "saved_model.pb")):
            cn = d
            break
    rng = np.random.default_rng(4004)
    real = []  # (rows [N, 6] xyxy pixels, in_w, in_h, C, model)
    if cn:
        man = manifest(cn)
        inp = (man["input"]["width"], man["input"]["height"])
        C = len(man["labels"])
        gold = np.load(os.path.join(cn, "1", "golden", "input_images.npy")).astype(np.float32)
        imgs = list(gold) + [g[:, ::-1] for g in gold[:2]]  # real photos, two mirrored
        sig = load_signature(cn)
        key = man["input"]["key"]
        okey = man.get("output", {}).get("detections", "detections")
        for im in imgs:
            real.append((run(sig, key, [im])[0][okey][0], inp[0], inp[1], C, "centernet"))
    else:  # no centernet: the tiny TF function on generated images
        C, inp = 5, (256, 256)
        f = make_rows_fn(C, 16, 77)
        for _ in range(6):
            im = synth_image(rng, *inp)
            real.append((f(im[None]).numpy()[0], inp[0], inp[1], C, "tiny_rows_fn"))

    specs = [
        # (image, src, resize, fmt, units, layout, label_offset, nms, options, note)
        (0, None, "stretch", "xyxy", "pixels", "std", 0, True, opts(), "source = input, as exported"),
        (1, (640, 480), "stretch", "yxyx", "pixels", "cls_first", 0, True, opts(), "yxyx pixels"),
        (2, (640, 480), "letterbox", "cxcywh", "pixels", "std", 0, True, opts(score_threshold=0.1), "cxcywh pixels"),
        (3, (300, 500), "letterbox", "xyxy", "normalized", "extra", 0, True, opts(), "xyxy normalized"),
        (0, (1280, 720), "letterbox", "yxyx", "normalized", "std", 1, True, opts(score_threshold=0.1), "yxyx normalized, label_offset 1"),
        (1, (640, 480), "stretch", "cxcywh", "normalized", "extra", 0, True, opts(score_threshold=0.1, class_agnostic=True), "cxcywh normalized, agnostic"),
        (2, (640, 480), "stretch", "xyxy", "pixels", "std", 0, False, opts(score_threshold=0.05), "nms false"),
        (3, (640, 480), "letterbox", "xyxy", "pixels", "cls_first", 0, True, opts(score_threshold=0.05, classes=[0, 14], min_area=100.0), "class filter + min_area"),
        (4, (192, 101), "letterbox", "cxcywh", "pixels", "std", 0, True, opts(max_detections=3, score_threshold=0.05), "max_detections 3"),
        (5, (640, 480), "stretch", "yxyx", "pixels", "extra", 2, True, opts(nms_threshold=0.3, score_threshold=0.05), "nms 0.3, label_offset 2"),
        (0, (50, 400), "letterbox", "xyxy", "pixels", "std", 0, False, opts(score_threshold=0.05, max_detections=10), "nms false, max 10"),
        (1, (640, 480), "stretch", "xyxy", "pixels", "std", 0, True, opts(score_threshold=0.0, nms_threshold=0.5), "score_threshold 0: every row a candidate"),
        (2, (1000, 1000), "stretch", "cxcywh", "normalized", "cls_first", 0, True, opts(score_threshold=0.05, min_area=20000.0), "min_area 20000"),
        (3, (300, 500), "stretch", "yxyx", "normalized", "std", 0, False, opts(score_threshold=0.01, class_agnostic=True), "nms false, class_agnostic: suppression across classes only"),
        (4, (640, 480), "letterbox", "xyxy", "pixels", "std", 0, True, opts(score_threshold=0.99), "edge: zero candidates above threshold"),
        (5, (640, 480), "letterbox", "xyxy", "pixels", "std", 0, True, opts(score_threshold=0.05), "edge: NaN/Inf in box, score and class columns"),
        (0, (640, 480), "stretch", "xyxy", "pixels", "std", 0, True, opts(score_threshold=0.05), "edge: boxes far outside the frame"),
        (1, (640, 480), "stretch", "xyxy", "pixels", "std", 0, True, opts(score_threshold=0.05), "edge: equal scores across classes and rows (tie order)"),
        (2, (640, 480), "stretch", "xyxy", "pixels", "std", 1, True, opts(score_threshold=0.0), "edge: class values -1+1, 80+1 (out of range), 0.5+1 -> 2 - 1 = 1, x.4999 rounding"),
    ]
    for i, (im, src, resize, fmt, units, layout, off, nms_on, o, note) in enumerate(specs):
        def mk(i=i, im=im, src=src, resize=resize, fmt=fmt, units=units, layout=layout, off=off, nms_on=nms_on,
               o=o, note=note, attempt=[0]):
            rows, in_w, in_h, C, model = real[(im + attempt[0]) % len(real)]
            attempt[0] += 1
            rows = rows_mutate(i, rows.copy(), note, C)
            r = np.random.default_rng(i)
            d, out = rows_transform(rows, fmt, units, layout, off, in_w, in_h, r)
            out = {"detections": "detections", **out, "nms": nms_on}
            s = src or (in_w, in_h)
            return base_case("rows", s, (in_w, in_h), resize, C, out, o, note, model), {"detections": d}
        w.emit_first([mk] * len(real))

    # N = 10,000 rows, all over the threshold, from the tiny TF function on a 400x400 image
    C, pool = 5, 4
    f = make_rows_fn(C, pool, 99)
    for n, (src, resize, fmt, units, o, note) in enumerate([
        ((640, 480), "letterbox", "xyxy", "pixels", opts(), "edge: N = 10000 rows, all >= threshold, per-class NMS"),
        ((1280, 720), "stretch", "cxcywh", "normalized", opts(class_agnostic=True, max_detections=1000),
         "edge: N = 10000 rows, agnostic NMS, max 1000"),
    ]):
        def mk(n=n, src=src, resize=resize, fmt=fmt, units=units, o=o, note=note, attempt=[0]):
            r = np.random.default_rng(5000 + 10 * n + attempt[0])
            attempt[0] += 1
            im = synth_image(r, 400, 400, cap=400)
            rows = f(im[None]).numpy()[0]
            assert rows.shape == (10000, 6) and (rows[:, 4] >= 0.25).all()
            d, out = rows_transform(rows, fmt, units, "std", 0, 400, 400, r)
            out = {"detections": "detections", **out, "nms": True}
            return base_case("rows", src, (400, 400), resize, C, out, o, note, "tiny_rows_fn"), {"detections": d}
        w.emit_first([mk] * 5)

    # the tiny function also at another size (1024 rows), as a second "model"
    f2 = make_rows_fn(7, 8, 123)
    for n, (src, resize, fmt, units, nms_on, o, note) in enumerate([
        ((640, 480), "letterbox", "yxyx", "pixels", True, opts(score_threshold=0.5), "tiny fn, 1024 rows, yxyx"),
        ((300, 500), "stretch", "xyxy", "normalized", False, opts(classes=[1, 3, 5], max_detections=50), "tiny fn, nms false, class filter"),
    ]):
        def mk(n=n, src=src, resize=resize, fmt=fmt, units=units, nms_on=nms_on, o=o, note=note, attempt=[0]):
            r = np.random.default_rng(6000 + 10 * n + attempt[0])
            attempt[0] += 1
            im = synth_image(r, 256, 256)
            rows = f2(im[None]).numpy()[0]
            d, out = rows_transform(rows, fmt, units, "std", 0, 256, 256, r)
            out = {"detections": "detections", **out, "nms": nms_on}
            return base_case("rows", src, (256, 256), resize, 7, out, o, note, "tiny_rows_fn"), {"detections": d}
        w.emit_first([mk] * 5)


def rows_mutate(i, rows, note, C):
    """Edits of real (x1, y1, x2, y2, score, class) rows for the edge cases."""
    if "NaN/Inf" in note:
        rows[0, 0] = np.nan
        rows[1, 2] = np.inf
        rows[2, 1] = -np.inf
        rows[3, 4] = np.nan
        rows[4, 4] = np.inf
        rows[5, 4] = -np.inf
        rows[6, 5] = np.nan
        rows[7, 3] = np.nan
        rows[:10, 4] = np.where(np.isfinite(rows[:10, 4]), np.maximum(rows[:10, 4], 0.5), rows[:10, 4])
    elif "far outside" in note:
        rows[:10, 4] = np.linspace(0.9, 0.5, 10)
        rows[0, :4] = [-5000, -4000, -4900, -3000]  # left-above, fully outside
        rows[1, :4] = [3000, 200, 3500, 300]  # right, fully outside
        rows[2, :4] = [-2000, -2000, 3000, 3000]  # covers everything
        rows[3, :4] = [400, 400, 9000, 700]  # partly outside
        rows[4, :4] = [100, 6000, 200, 7000]  # below
        rows[5, :4] = [-1e6, -1e6, 1e6, 1e6]
    elif "equal scores" in note:
        rows[:12, 4] = 0.5
        rows[:12, 5] = [3, 1, 3, 0, 1, 0, 2, 2, 3, 1, 0, 0]
        rows[12:, 4] = np.minimum(rows[12:, 4], 0.4)
        rows[6, :4] = rows[7, :4]  # an exact duplicate with equal score and class
    elif "class values" in note:
        rows[:8, 4] = np.linspace(0.9, 0.6, 8)
        rows[:8, 5] = [-1.0, C, 0.5, 1.4999, C - 0.5, 2.5, -0.5, 0.49999997]
    return rows


# --------------------------------------------------------------- anchorfree


def build_anchorfree(C, seed):
    """Tiny random YOLOv8-style head: strides 8 and 16; per cell (cx, cy, w, h) =
    sigmoid(.) * input size and C sigmoid class scores; output [1, 4+C, N]."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    L = keras.layers
    x_in = keras.Input((None, None, 3))
    init = keras.initializers.HeNormal(seed=seed)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x_in)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
    p8 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
    p16 = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(p8)
    head = L.Conv2D(4 + C, 1, kernel_initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 1),
                    bias_initializer=keras.initializers.Constant([0.0, 0.0, -1.0, -1.0] + [-1.5] * C))
    model = keras.Model(x_in, [head(p8), head(p16)])

    def predict(img):  # [1, h, w, 3]
        h, w = img.shape[1], img.shape[2]
        size = tf.constant([w, h, w, h], tf.float32)
        outs = []
        for o in model(tf.constant(img), training=False):
            o = tf.reshape(o, [1, -1, 4 + C])
            box = tf.sigmoid(o[..., :4]) * tf.concat([size[:2], size[2:] * 0.5], 0)  # w, h up to half
            outs.append(tf.concat([box, tf.sigmoid(o[..., 4:])], -1))
        return tf.transpose(tf.concat(outs, 1), [0, 2, 1]).numpy()  # [1, 4+C, N]

    return predict


def gen_anchorfree(w: Writer):
    C = 4
    predict = build_anchorfree(C, 7)
    sizes = [(64, 64), (96, 64), (128, 96), (64, 128)]
    specs = [
        ((640, 480), "letterbox", opts(), "defaults"),
        ((640, 480), "stretch", opts(), "stretch"),
        ((300, 500), "letterbox", opts(), "portrait"),
        (None, "stretch", opts(), "source = input"),
        ((1280, 720), "letterbox", opts(class_agnostic=True), "class_agnostic"),
        ((640, 480), "stretch", opts(score_threshold=0.8), "score_threshold 0.8"),
        ((640, 480), "letterbox", opts(nms_threshold=0.3), "nms 0.3"),
        ((640, 480), "letterbox", opts(classes=[0, 3]), "class filter [0, 3]"),
        ((640, 480), "stretch", opts(min_area=3000.0), "min_area 3000"),
        ((640, 480), "letterbox", opts(max_detections=4), "max_detections 4"),
        ((192, 101), "letterbox", opts(), "letterbox rounding"),
        ((50, 400), "letterbox", opts(score_threshold=0.5), "narrow source"),
        ((640, 480), "stretch", opts(score_threshold=0.05, nms_threshold=0.7), "many candidates"),
        ((1000, 1000), "letterbox", opts(classes=[2], min_area=500.0), "class filter [2] + min_area"),
        ((640, 480), "stretch", opts(nms_threshold=0.0), "nms 0"),
        ((640, 480), "letterbox", opts(nms_threshold=1.0, max_detections=300), "nms 1, max 300"),
        ((300, 500), "stretch", opts(class_agnostic=True, max_detections=1), "agnostic, max 1"),
        ((640, 480), "letterbox", opts(score_threshold=0.9999), "edge: zero candidates above threshold"),
        ((640, 480), "letterbox", opts(), "edge: NaN/Inf in box values, +Inf class score (score Inf -> dropped)"),
        ((640, 480), "stretch", opts(), "edge: NaN class score (score NaN -> dropped)"),
        ((640, 480), "letterbox", opts(), "edge: boxes far outside the frame"),
        ((640, 480), "stretch", opts(score_threshold=0.3), "edge: equal class scores (ties -> lowest class) and equal scores across candidates"),
    ]
    rng = np.random.default_rng(7007)
    for i, (src, resize, o, note) in enumerate(specs):
        in_w, in_h = sizes[i % len(sizes)]
        layout = "channels_first" if i % 2 == 0 else "channels_last"
        units = "normalized" if i % 3 == 2 else "pixels"

        def mk(i=i, src=src, resize=resize, o=o, note=note, in_w=in_w, in_h=in_h, layout=layout, units=units):
            s = src or (in_w, in_h)
            img = synth_image(rng, *s, style="noise" if i % 4 == 1 else "shapes")
            p = predict(to_input(img, R.make_transform(*s, in_w, in_h, resize))[None])
            anchorfree_mutate(i, p, note, C)
            if units == "normalized":
                p[0, :4] = p[0, :4] / np.array([in_w, in_h, in_w, in_h], np.float32)[:, None]
            if layout == "channels_last":
                p = np.ascontiguousarray(p.transpose(0, 2, 1))
            out = {"predictions": "predictions", "layout": layout, "box_units": units}
            return base_case("anchorfree", s, (in_w, in_h), resize, C, out, o, note, "tiny_anchorfree_keras"), {"predictions": p}
        w.emit_first([mk] * 8)


def anchorfree_mutate(i, p, note, C):
    """p: [1, 4+C, N] (pixels)."""
    N = p.shape[2]
    if "NaN/Inf in box" in note:
        p[0, 4, :8] = 0.9
        p[0, 0, 0] = np.nan
        p[0, 2, 1] = np.inf
        p[0, 3, 2] = -np.inf
        p[0, 1, 3] = np.inf
        p[0, 5, 4] = np.inf
        p[0, 2, 5] = -1.0  # negative width: x2 < x1
    elif "NaN class" in note:
        p[0, 4:, :6] = 0.9
        p[0, 4 + np.arange(6) % C, np.arange(6)] = np.nan
    elif "far outside" in note:
        p[0, 4, :6] = 0.95
        p[0, 0, :6] = [-1000, 5000, 30, 30, -80, 1e5]
        p[0, 1, :6] = [30, 30, -700, 4000, -80, -1e5]
        p[0, 2, :6] = [50, 50, 50, 50, 100, 10]
    elif "equal class scores" in note:
        k = min(N, 10)
        p[0, 4:, :k] = 0.2
        p[0, 4 + 1, :k] = 0.7
        p[0, 4 + 3, :k] = 0.7  # class 1 and 3 tie -> class 1
        p[0, 4 + 2, :4] = 0.7  # classes 1, 2, 3 tie -> class 1


# --------------------------------------------------------------------- main


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    models_dir, out_dir = argv[1], argv[2]
    real_dir = argv[3] if len(argv) == 4 else os.path.join(os.path.dirname(os.path.abspath(models_dir)), "models-real")
    t0 = time.time()
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # only what this script writes
        if re.fullmatch(r"(yolo|odapi|rows|anchorfree)-\d+", name):
            shutil.rmtree(os.path.join(out_dir, name))
    w = Writer(out_dir)
    for gen, args in ((gen_yolo, (models_dir,)), (gen_odapi, (models_dir,)), (gen_rows, (models_dir, real_dir)),
                      (gen_anchorfree, ())):
        t, c = time.time(), time.process_time()
        gen(w, *args)
        print(f"{gen.__name__}: {time.time() - t:.1f} s ({time.process_time() - c:.1f} s CPU)", file=sys.stderr)
    print("\n".join(w.summary))
    print(f"{sum(w.count.values())} cases {w.count} in {out_dir}; {w.rejected} ill-conditioned variants "
          f"regenerated; {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
