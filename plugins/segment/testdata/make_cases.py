"""Generate the segmentation test cases of plugins/segment.

    cd /work/main && TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python \
        plugins/segment/testdata/make_cases.py models plugins/segment/testdata/cases [MODELS_REAL_DIR]

Raw outputs come from real model runs in Python TensorFlow: MODELS_DIR/unet and
MODELS_DIR/fcn8s (multi-class logits) and MODELS_REAL_DIR/selfie (a sigmoid
person mask; default MODELS_REAL_DIR: the models-real/ beside MODELS_DIR), on
frames of odd sizes brought to the model's input exactly as the plugin does
(tf.image.resize bilinear, then the manifest's normalisation). The expected
results come from the numpy reference tfmodels/zoo/segment_ref.py. Three modes,
at least 20 cases each:

    nearest   multi-class, resize = "nearest"
    bilinear  multi-class, resize = "bilinear"
    single    single channel: selfie probabilities (softmax = false) and U-Net's
              foreground-minus-background logit (softmax = true), nearest and
              bilinear

Edge cases are edits of real outputs (NaN and Inf values, a 1x1 output, an
output smaller than the input, all NaN). Every case is checked to be well
conditioned: no interpolated best-minus-second logit (bilinear) and no
probability against the threshold (sigmoid or bilinear) is within EPS of a
tie, so an implementation that rounds differently in the last bits still
gives the same class map. Deterministic (seeded); rewrites OUT_DIR/<mode>-<NN>/
and OUT_DIR/models/ only (two tiny SavedModels the Go tests serve end to end:
a 1x1 output with the batch fixed at 1, and NaN logits; see export_tiny_models).

One case, OUT_DIR/<mode>-<NN>/:
    frame.npy      uint8 [H, W, 3]: the frame (RGB)
    output.npy     float32 [1, h, w, n]: the raw model output post-processes
    classmap.npy   uint8 [H, W]: the reference class map (single channel: 1 = foreground)
    case.json      mode, model, note, frame {width, height}, labels, softmax,
                   options (the plugin's option names), e2e (output.npy is the
                   model's own output for frame.npy, unedited: the Go test also
                   runs the frame through the model), expected (the plugin's
                   output JSON: classes, alerts, width, height, nan_values),
                   margin (the smallest decision margin, information only)
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

from tfmodels.zoo import segment_ref as R  # noqa: E402

EPS = 1e-9
HUGE = 1e30  # sanitized NaN/Inf are +-FLT_MAX = 3.4e38: finite logits vanish beside them
SIZES = [(97, 61), (333, 187), (64, 64), (1, 1), (3, 200), (255, 17), (641, 479), (123, 457), (50, 50), (7, 5),
         (401, 299), (160, 90), (1, 64), (211, 211), (33, 129), (500, 13), (2, 3), (129, 97), (320, 241), (77, 301),
         (63, 65), (999, 7), (45, 1), (256, 256)]
# the person model on mostly photo-like frames (and a few degenerate ones)
SELFIE_SIZES = [(97, 61), (333, 187), (64, 64), (1, 1), (256, 256), (255, 17), (641, 479), (123, 457), (50, 50),
                (7, 5), (401, 299), (160, 90), (211, 211), (181, 241), (320, 240), (99, 133)]
MODES = ("nearest", "bilinear", "single")


# ------------------------------------------------------------------ frames


def synth_frame(rng, W, H):
    """uint8 [H, W, 3]: shapes on a gradient, or noise."""
    if rng.uniform() < 0.25:
        return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    c0, c1 = rng.uniform(0, 255, (2, 3))
    t = (np.arange(W)[None, :] / max(W - 1, 1) * 0.5 + np.arange(H)[:, None] / max(H - 1, 1) * 0.5)[..., None]
    img = c0 * (1 - t) + c1 * t + rng.uniform(-8, 8, (H, W, 1))
    for _ in range(int(rng.integers(2, 9))):
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        rw, rh = rng.uniform(0.05, 0.5) * W, rng.uniform(0.05, 0.5) * H
        yy, xx = np.mgrid[0:H, 0:W] + 0.5
        if rng.uniform() < 0.5:
            m = (np.abs(xx - cx) < rw / 2) & (np.abs(yy - cy) < rh / 2)
        else:
            m = ((xx - cx) / (rw / 2 + 1e-9)) ** 2 + ((yy - cy) / (rh / 2 + 1e-9)) ** 2 < 1
        img[m] = rng.uniform(0, 255, 3)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def photo_frame(rng, photos, W, H):
    """uint8 [H, W, 3]: a random crop of a real photo, resized to W x H."""
    import tensorflow as tf

    p = photos[int(rng.integers(len(photos)))]
    ph, pw = p.shape[:2]
    cw, ch = int(rng.integers(pw // 2, pw + 1)), int(rng.integers(ph // 2, ph + 1))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = p[y0:y0 + ch, x0:x0 + cw].astype(np.float32)
    img = tf.image.resize(crop[None], (H, W), method="bilinear", antialias=True).numpy()[0]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ models


class Model:
    def __init__(self, version_dir, name):
        import tensorflow as tf

        with open(os.path.join(version_dir, "edgeinfer.toml"), "rb") as f:
            self.man = tomllib.load(f)
        self.name = name
        self.sig = tf.saved_model.load(version_dir).signatures[self.man["signature"]]
        self.labels = list(self.man["labels"])
        self.softmax = bool(self.man["output"].get("softmax", False))

    def input(self, frame):
        """The model input of a frame, as the plugin makes it: tf.image.resize
        (bilinear, half-pixel centres, no antialias) to the manifest's size, then
        (v * scale - mean) / std."""
        import tensorflow as tf

        i = self.man["input"]
        x = frame.astype(np.float32)
        if (i["height"], i["width"]) != frame.shape[:2]:
            x = tf.image.resize(x[None], (i["height"], i["width"]), method="bilinear", antialias=False).numpy()[0]
        x = (x.astype(np.float64) * i["scale"] - np.array(i["mean"])) / np.array(i["std"])
        return x.astype(np.float32)

    def run(self, frames):
        """Raw outputs [1, h, w, n] of each frame; batch 1 at a time when the
        manifest fixes the batch at 1."""
        import tensorflow as tf

        key, out = self.man["input"]["key"], self.man["output"]["logits"]
        xs = np.stack([self.input(f) for f in frames])
        if self.man["input"].get("batch", 0) == 1:
            return [self.sig(**{key: tf.constant(x[None])})[out].numpy() for x in xs]
        y = self.sig(**{key: tf.constant(xs)})[out].numpy()
        return [y[i:i + 1] for i in range(len(frames))]


# ------------------------------------------------------------------ writer


class Writer:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = {m: 0 for m in MODES}
        self.rejected = 0
        self.summary = []

    def emit(self, mode, model, note, frame, raw, labels, softmax, options, e2e):
        """Write the case if well conditioned; return whether it was written."""
        H, W = frame.shape[:2]
        diag = {}
        expected, cmap = R.segment(raw, W, H, labels, softmax, options, diag)
        margin = np.inf
        if "gap" in diag:
            # relative to the values compared; a zero gap between equal corners, or
            # between values dominated by +-FLT_MAX (which absorb every finite
            # logit), is an exact tie (lowest class) in any implementation
            g, best = diag["gap"], np.abs(diag["best"])
            exact = (g == 0) & (diag["tie_exact"] | (best >= HUGE))
            g = (g / np.maximum(best, 1.0))[~exact]
            margin = float(np.min(g, initial=np.inf))
        if "margin" in diag:
            margin = float(np.min(diag["margin"][~diag["margin_exact"]], initial=np.inf))
        if margin < EPS:
            self.rejected += 1
            print(f"  regenerating ({mode}: {note}): margin {margin:.3g}", file=sys.stderr)
            return False
        n = self.count[mode]
        self.count[mode] += 1
        d = os.path.join(self.out_dir, f"{mode}-{n:02d}")
        os.makedirs(d)
        np.save(os.path.join(d, "frame.npy"), np.ascontiguousarray(frame))
        np.save(os.path.join(d, "output.npy"), np.ascontiguousarray(raw, dtype=np.float32))
        np.save(os.path.join(d, "classmap.npy"), np.ascontiguousarray(cmap, dtype=np.uint8))
        case = {
            "mode": mode, "model": model, "note": note,
            "frame": {"width": W, "height": H},
            "labels": labels, "softmax": softmax, "options": options, "e2e": e2e,
            "expected": expected, "margin": None if margin == np.inf else margin,
        }
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
        found = ", ".join(f"{c['label']} {c['share']:.3f}/{c['components']}" for c in expected["classes"][:4])
        self.summary.append(f"{mode}-{n:02d} {model} {W}x{H} out {raw.shape[1]}x{raw.shape[2]}: {found}  ({note})")
        return True


# ------------------------------------------------------------------ edits


def nan_inf(raw, rng):
    """Real logits with NaN, +Inf and -Inf in a few hundred values, a block of
    pixels all NaN, and a pixel where every class is +Inf."""
    r = raw.copy()
    _, h, w, n = r.shape
    k = max(1, h * w * n // 40)
    flat = r.reshape(-1)
    idx = rng.choice(flat.size, size=min(3 * k, flat.size), replace=False)
    flat[idx[:k]] = np.nan
    flat[idx[k:2 * k]] = np.inf
    flat[idx[2 * k:]] = -np.inf
    y, x = int(rng.integers(h)), int(rng.integers(w))
    r[0, y:y + 3, x:x + 4, :] = np.nan
    r[0, int(rng.integers(h)), int(rng.integers(w)), :] = np.inf
    return r


# -------------------------------------------------------------------- modes


MULTI_OPTIONS = [
    ({}, "defaults"),
    ({"connectivity": 4}, "4-connectivity"),
    ({"min_area": 20}, "min_area 20"),
    ({"min_area": 150, "connectivity": 4}, "min_area 150, 4-connectivity"),
    ({"ignore_classes": ["background"]}, "background ignored"),
    ({"alerts": {"background": 0.3, "foreground": 0.05}}, "alerts"),
    ({"masks": False, "min_area": 3}, "no masks, min_area 3"),
]


def gen_multi(w: Writer, models, mode, seed):
    rng = np.random.default_rng(seed)
    unet, fcn = models["unet"], models["fcn8s"]
    sizes = SIZES
    # frames: one per size, alternating the two models
    frames = [synth_frame(rng, *s) for s in sizes]
    spare = [synth_frame(rng, *s) for s in sizes]
    raws = {}
    for name, m in (("unet", unet), ("fcn8s", fcn)):
        raws[name] = m.run(frames), m.run(spare)

    def opts_for(i, m):
        o, note = MULTI_OPTIONS[i % len(MULTI_OPTIONS)]
        o = json.loads(json.dumps(o))
        if "alerts" in o and m is fcn:
            o["alerts"] = {"background": 0.3, "person": 0.01, "cat": 0.02}
        return dict(o, resize=mode), note

    for i, s in enumerate(sizes):
        name = ("unet", "fcn8s")[i % 2]
        m = models[name]
        o, note = opts_for(i, m)
        for attempt, (fr, raw) in enumerate(((frames[i], raws[name][0][i]), (spare[i], raws[name][1][i]))):
            if w.emit(mode, name, note, fr, raw, m.labels, m.softmax, o, True):
                break
        else:
            raise RuntimeError(f"{mode} {name} {s}: no well-conditioned frame")

    # edits of real outputs
    edits = [
        ("unet", (211, 157), "NaN/Inf values, a NaN block, an all +Inf pixel", lambda r, g: nan_inf(r, g)),
        ("fcn8s", (97, 203), "NaN/Inf values, a NaN block, an all +Inf pixel", lambda r, g: nan_inf(r, g)),
        ("fcn8s", (123, 77), "1x1 output (one pixel of a real output)", lambda r, g: r[:, 31:32, 17:18].copy()),
        ("unet", (5, 9), "1x1 output on a tiny frame", lambda r, g: r[:, 40:41, 3:4].copy()),
        ("fcn8s", (301, 203), "output smaller than the input, not square (every 5th column, 3rd row)",
         lambda r, g: np.ascontiguousarray(r[:, ::3, ::5])),
        ("unet", (64, 64), "all NaN: class 0 everywhere", lambda r, g: np.full_like(r, np.nan)),
        ("fcn8s", (37, 311), "a 1 x w output row", lambda r, g: r[:, 20:21].copy()),
    ]
    for k, (name, size, note, edit) in enumerate(edits):
        m = models[name]
        for attempt in range(6):
            fr = synth_frame(rng, *size)
            raw = edit(m.run([fr])[0], np.random.default_rng(seed + 100 * k + attempt))
            o = dict(MULTI_OPTIONS[k % len(MULTI_OPTIONS)][0], resize=mode)
            if "alerts" in o and m is fcn:
                o["alerts"] = {"background": 0.3, "person": 0.01}
            if w.emit(mode, name, "edge: " + note, fr, raw, m.labels, m.softmax, o, False):
                break
        else:
            raise RuntimeError(f"{mode} edge {note}: no well-conditioned variant")


SINGLE_OPTIONS = [
    ({}, "defaults"),
    ({"resize": "bilinear"}, "bilinear"),
    ({"threshold": 0.3, "connectivity": 4}, "threshold 0.3, 4-connectivity"),
    ({"threshold": 0.8, "resize": "bilinear"}, "threshold 0.8, bilinear"),
    ({"min_area": 50, "alerts": {"person": 0.1}}, "min_area 50, alert at 0.1"),
    ({"resize": "bilinear", "min_area": 5, "connectivity": 4, "masks": False}, "bilinear, min_area 5, no masks"),
]


def gen_single(w: Writer, models, seed):
    rng = np.random.default_rng(seed)
    selfie, unet = models["selfie"], models["unet"]
    photos = selfie_photos(selfie)
    # selfie on crops of real photos (and a few synthetic frames)
    sizes = SELFIE_SIZES
    for i, s in enumerate(sizes):
        o, note = SINGLE_OPTIONS[i % len(SINGLE_OPTIONS)]
        for attempt in range(6):
            synthetic = i % 5 == 4
            fr = synth_frame(rng, *s) if synthetic else photo_frame(rng, photos, *s)
            raw = selfie.run([fr])[0]
            if w.emit("single", "selfie", note + (", synthetic frame" if synthetic else ", photo crop"),
                      fr, raw, selfie.labels, False, o, True):
                break
        else:
            raise RuntimeError(f"single selfie {s}: no well-conditioned frame")
    # U-Net's two logits as one foreground logit (l1 - l0: sigmoid(l1 - l0) is the
    # softmax probability of class 1), softmax = true
    for i, s in enumerate(SIZES[16:22]):
        o, note = SINGLE_OPTIONS[(i + 1) % len(SINGLE_OPTIONS)]
        o = json.loads(json.dumps(o).replace('"person"', '"foreground"'))
        for attempt in range(6):
            fr = synth_frame(rng, *s)
            r = unet.run([fr])[0]
            raw = (r[..., 1:2] - r[..., 0:1]).astype(np.float32)
            if w.emit("single", "unet_logit", note + ", logit (softmax = true)", fr, raw, ["foreground"], True, o, False):
                break
        else:
            raise RuntimeError(f"single unet {s}: no well-conditioned frame")
    edits = [
        ("selfie", (149, 211), {}, "NaN/Inf values and a NaN block", lambda r, g: nan_inf(r, g)),
        ("selfie", (149, 211), {"resize": "bilinear"}, "NaN/Inf values and a NaN block, bilinear", lambda r, g: nan_inf(r, g)),
        ("selfie", (83, 61), {"threshold": 0.2}, "1x1 output", lambda r, g: r[:, 128:129, 128:129].copy()),
        ("selfie", (301, 257), {"resize": "bilinear"}, "output smaller than the input (every 8th pixel)",
         lambda r, g: np.ascontiguousarray(r[:, ::8, ::8])),
    ]
    for k, (name, size, o, note, edit) in enumerate(edits):
        for attempt in range(6):
            fr = photo_frame(rng, photos, *size)
            raw = edit(selfie.run([fr])[0], np.random.default_rng(seed + 100 * k + attempt))
            if w.emit("single", name, "edge: " + note, fr, raw, selfie.labels, False, o, False):
                break
        else:
            raise RuntimeError(f"single edge {note}: no well-conditioned variant")


def selfie_photos(selfie):
    """The real photos of the selfie model's golden samples, uint8 256 x 256."""
    d = os.path.join(selfie.dir, "golden")
    x = np.load(os.path.join(d, f"input_{selfie.man['input']['key']}.npy"))
    return [np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8) for p in x]


# -------------------------------------------------------------- tiny models


TINY_MANIFEST = """# A tiny segment model for plugins/segment's tests (testdata/make_cases.py).
task = "segment"
architecture = "{arch}"
signature = "serving_default"
labels = {labels}

[input]
key = "images"
height = 0
width = 0
channels = 3
layout = "NHWC"
dtype = "float32"
resize = "stretch"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
batch = {batch}

[output]
logits = "logits"
softmax = true
"""


def export_tiny_models(out_dir):
    """OUT_DIR/models/<name>/1: SavedModels the Go tests serve end to end.

    mean1x1:   input [1, H, W, 3] (batch fixed at 1, any size), output [1, 1, 1, 3]:
               the frame's mean R, G, B as three logits (labels r, g, b)
    nanlogits: input [batch, H, W, 3], output [batch, H, W, 2] at the input size:
               class "a" is NaN where R > 0.5 and 0 elsewhere, class "b" is -1
    """
    import tensorflow as tf

    root = os.path.join(out_dir, "models")
    if os.path.isdir(root):
        shutil.rmtree(root)

    class Mean(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name="images")])
        def serve(self, images):
            return {"logits": tf.reduce_mean(images, axis=[1, 2], keepdims=True)}

    class NaNs(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def serve(self, images):
            r = images[..., 0:1]
            a = tf.where(r > 0.5, tf.fill(tf.shape(r), float("nan")), tf.zeros_like(r))
            return {"logits": tf.concat([a, tf.fill(tf.shape(r), -1.0)], axis=-1)}

    for name, mod, labels, batch, arch in (("mean1x1", Mean(), ["r", "g", "b"], 1, "mean colour, 1x1 output"),
                                           ("nanlogits", NaNs(), ["a", "b"], 0, "NaN where red")):
        d = os.path.join(root, name, "1")
        tf.saved_model.save(mod, d, signatures={"serving_default": mod.serve})
        with open(os.path.join(d, "edgeinfer.toml"), "w") as f:
            f.write(TINY_MANIFEST.format(arch=arch, labels=json.dumps(labels), batch=batch))


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
        if re.fullmatch(r"(nearest|bilinear|single)-\d+", name):
            shutil.rmtree(os.path.join(out_dir, name))
    models = {}
    for name, d in (("unet", models_dir), ("fcn8s", models_dir), ("selfie", real_dir)):
        vd = os.path.join(d, name, "1")
        models[name] = Model(vd, name)
        models[name].dir = vd
    w = Writer(out_dir)
    gen_multi(w, models, "nearest", 11)
    gen_multi(w, models, "bilinear", 22)
    gen_single(w, models, 33)
    export_tiny_models(out_dir)
    print("\n".join(w.summary))
    print(f"{sum(w.count.values())} cases {w.count} in {out_dir}; {w.rejected} ill-conditioned variants "
          f"regenerated; {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
