"""A generated object-detection and instance-segmentation data set: shapes.

Nothing is downloaded; every image is drawn with NumPy from a fixed seed.

    images, objects = generate(n, size, seed)

* images: uint8 [n, size, size, 3], RGB.
* objects[i]: the objects of image i, a list of dicts
      {"class": int,                      index into CLASSES
       "box": (x1, y1, x2, y2),           float pixels, the tight box of the mask:
                                          x1 = min column, x2 = max column + 1 (exclusive),
                                          y1 = min row, y2 = max row + 1
       "mask": np.bool_ [size, size]}     the VISIBLE pixels of the object

Content of an image: 1 to 4 shapes (circle, square, triangle; the class is
drawn uniformly), each of nominal size 12%-45% of the image side (circle
diameter, square side, equilateral triangle side), squares and triangles
rotated by a random angle, at a random position: a shape may cross the border
but at least half of its area stays inside. Each shape has a flat colour at
least COLOR_SEPARATION (RGB Euclidean distance) from the mean background under
it and from the colour of every earlier shape it overlaps. Later shapes are
drawn on top and occlude earlier ones: masks and boxes are those of the visible
part, and no object has less than MIN_VISIBLE (40%) of its full area visible
(a placement that would hide more of an earlier shape is re-drawn elsewhere;
should a shape still end up below 40%, it is dropped from the labels).
Backgrounds are flat colour with strong Gaussian noise, or textured: a
low-frequency linear gradient between two colours, low-frequency stripes, or
both, with weak noise. The noise is added over the whole image, shapes included.

Determinism and splits: image i of seed s is drawn from its own generator
np.random.default_rng([s, i]) (uniform 0..1 scene parameters scaled by size),
so the same (n, size, seed) gives identical arrays, and generate(m, size, s)
is the first m images of generate(n, size, s) for m <= n.

    seed 0   training split
    seed 1   held-out split (evaluation, golden files)
    seed >= 2  extra training data (e.g. fresh images per epoch); never seed 1.

write_dir(dir, images, objects) writes the set as files (PNG images, a labels
JSON, the masks as .npy) for tests that send images through the daemon.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

CLASSES = ["circle", "square", "triangle"]
TRAIN_SEED = 0
HELDOUT_SEED = 1

MIN_SIZE, MAX_SIZE = 0.12, 0.45  # nominal shape size, fraction of the image side
MIN_INSIDE = 0.5  # fraction of a shape's area that must lie inside the image
MIN_VISIBLE = 0.4  # fraction of a shape's full area that must stay visible
COLOR_SEPARATION = 110.0  # min RGB distance of a shape's colour to what lies under it
MAX_SHAPES = 4
_TRIES = 40


def _raster(kind: int, cx: float, cy: float, s: float, theta: float, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Bool mask of the shape over pixel rows y0..y1-1, columns x0..x1-1 (pixel
    (r, c) is inside when its centre (c + 0.5, r + 0.5) is)."""
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx
    if kind == 0:  # circle, diameter s
        return xs * xs + ys * ys <= (s / 2) ** 2
    c, sn = math.cos(theta), math.sin(theta)
    if kind == 1:  # square, side s, rotated by theta
        u = xs * c + ys * sn
        v = -xs * sn + ys * c
        h = s / 2
        return (np.abs(u) <= h) & (np.abs(v) <= h)
    # equilateral triangle, side s, centred on its centroid, rotated by theta
    r = s / math.sqrt(3)
    verts = [(r * math.cos(theta + a), r * math.sin(theta + a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    inside = np.ones((y1 - y0, x1 - x0), dtype=bool)
    for k in range(3):
        (ax, ay), (bx, by) = verts[k], verts[(k + 1) % 3]
        # the vertices run clockwise on screen (y down): inside is cross >= 0
        inside &= (bx - ax) * (ys - ay) - (by - ay) * (xs - ax) >= 0
    return inside


def _full_area(kind: int, cx: float, cy: float, s: float, theta: float) -> int:
    """Pixel count of the whole shape, rasterised without the image border."""
    e = s * 0.75 + 2
    x0, x1 = int(math.floor(cx - e)), int(math.ceil(cx + e))
    y0, y1 = int(math.floor(cy - e)), int(math.ceil(cy + e))
    return int(_raster(kind, cx, cy, s, theta, x0, x1, y0, y1).sum())


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Float background [size, size, 3] in 0..255 and the sigma of the noise to add."""
    kind = rng.integers(4)  # 0 noisy, 1 gradient, 2 stripes, 3 gradient + stripes
    base = rng.uniform(0, 255, 3)
    bg = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if kind == 0:
        return bg.copy(), float(rng.uniform(8, 30))
    if kind in (1, 3):
        phi = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(phi) + yy * math.sin(phi)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        other = np.clip(base + rng.uniform(-110, 110, 3), 0, 255)
        bg = bg + t[..., None] * (other - base)
    if kind in (2, 3):
        phi = rng.uniform(0, math.pi)
        f = rng.uniform(1.0, 4.0)
        t = np.sin(2 * math.pi * f * (xx * math.cos(phi) + yy * math.sin(phi)) + rng.uniform(0, 2 * math.pi))
        amp = rng.uniform(15, 40) * rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3)
        bg = bg + t[..., None] * amp
    return np.clip(bg, 0, 255), float(rng.uniform(2, 8))


def _pick_color(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(60):
        c = rng.uniform(0, 255, 3)
        d = min(float(np.linalg.norm(c - a)) for a in avoid)
        if d >= COLOR_SEPARATION:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _one(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict], list[dict]]:
    """One image, its objects and per-object stats {"full_area", "visible"}."""
    bg, sigma = _background(rng, size)
    img = bg.copy()
    placed = []  # {"class", "mask" (visible), "color", "full"}
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        kind = int(rng.integers(len(CLASSES)))
        for _try in range(_TRIES):
            s = rng.uniform(MIN_SIZE, MAX_SIZE) * size
            theta = rng.uniform(0, 2 * math.pi) if kind else 0.0
            cx, cy = rng.uniform(0, size, 2)
            m = _raster(kind, cx, cy, s, theta, 0, size, 0, size)
            full = _full_area(kind, cx, cy, s, theta)
            if full == 0 or m.sum() < MIN_INSIDE * full:
                continue
            if any((p["mask"] & ~m).sum() < MIN_VISIBLE * p["full"] for p in placed):
                continue
            break
        else:
            continue  # no room for this shape
        avoid = [bg[m].mean(axis=0)] + [p["color"] for p in placed if (p["mask"] & m).any()]
        color = _pick_color(rng, avoid)
        for p in placed:
            p["mask"] &= ~m
        img[m] = color
        placed.append({"class": kind, "mask": m, "color": color, "full": full})
    img = img + rng.normal(0, sigma, img.shape)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    objects, stats = [], []
    for p in placed:
        m = p["mask"]
        vis = int(m.sum())
        if vis < MIN_VISIBLE * p["full"]:
            continue
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        objects.append({"class": p["class"], "box": box, "mask": m})
        stats.append({"full_area": p["full"], "visible": vis / p["full"]})
    return img, objects, stats


def generate_with_stats(n: int, size: int, seed: int):
    """generate() plus, per object, {"full_area": pixels of the unoccluded,
    uncropped shape, "visible": visible pixels / full_area} (for tests)."""
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    objects, stats = [], []
    for i in range(n):
        img, objs, st = _one(np.random.default_rng([seed, i]), size)
        images[i] = img
        objects.append(objs)
        stats.append(st)
    return images, objects, stats


def generate(n: int, size: int, seed: int) -> tuple[np.ndarray, list[list[dict]]]:
    """n images of size x size with their objects (see the module docstring)."""
    images, objects, _ = generate_with_stats(n, size, seed)
    return images, objects


def write_dir(dir: str, images: np.ndarray, objects: list[list[dict]]) -> None:
    """Writes <dir>/NNNN.png (RGB), <dir>/NNNN_masks.npy (bool [k, H, W], one
    mask per object in label order) and <dir>/labels.json:
    [{"file": "NNNN.png", "masks": "NNNN_masks.npy",
      "objects": [{"class": int, "label": str, "box": [x1, y1, x2, y2]}]}]."""
    from PIL import Image

    os.makedirs(dir, exist_ok=True)
    labels = []
    for i, (img, objs) in enumerate(zip(images, objects)):
        name = f"{i:04d}"
        Image.fromarray(np.asarray(img, dtype=np.uint8), "RGB").save(os.path.join(dir, name + ".png"))
        h, w = img.shape[:2]
        masks = np.stack([o["mask"] for o in objs]) if objs else np.zeros((0, h, w), dtype=bool)
        np.save(os.path.join(dir, name + "_masks.npy"), masks.astype(np.bool_))
        labels.append({
            "file": name + ".png",
            "masks": name + "_masks.npy",
            "objects": [{"class": int(o["class"]), "label": CLASSES[o["class"]], "box": [float(v) for v in o["box"]]} for o in objs],
        })
    with open(os.path.join(dir, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)
