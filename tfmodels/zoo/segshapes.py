"""A generated semantic-segmentation data set: shapes and dots, one class per pixel.

Nothing is downloaded; every image is drawn with NumPy from a fixed seed, with
the rasteriser and backgrounds of shapes.py (the detection set).

    images, labels = generate(n, size, seed)

* images: uint8 [n, size, size, 3], RGB.
* labels: uint8 [n, size, size], the class index (into CLASSES) of every pixel.

CLASSES = background, circle, square, triangle, dot.

Content of an image: 1 to 3 large shapes (circle, square or triangle, the class
drawn uniformly; nominal size BIG_MIN..BIG_MAX = 20%-45% of the image side:
circle diameter, square side, equilateral triangle side; squares and triangles
rotated by a random angle; a shape may cross the border but at least
MIN_INSIDE = 90% of its area stays inside) and 0 to 3 dots (small discs of
diameter DOT_MIN..DOT_MAX = 5.5%-9.5% of the side, 5.3-9.1 px at 96 px, always
entirely inside the image). The smallest circle (19 px at 96 px) stays well
above the largest dot. The objects are drawn in a random order, later ones on
top: a dot may lie on a shape or be partly covered by one. Each object has a
flat colour at least shapes.COLOR_SEPARATION (RGB distance) from the mean
background under it and from every earlier object it overlaps; no object keeps
less than MIN_VISIBLE (80%) of its full area visible (a placement that would
hide more of an earlier object is drawn again elsewhere; after 40 failures the
new object is left out). Backgrounds (shapes._background): flat colour with
strong Gaussian noise, or a gradient and/or stripes with weak noise; the noise
covers the whole image.

Pixel frequency of each class at 96x96 (frequencies(labels)):

                          background  circle  square  triangle  dot
    seed 0, 2000 images     0.8514    0.0508  0.0603   0.0306   0.0069
    seed 1, 200 images      0.8611    0.0444  0.0598   0.0279   0.0069

Dots are in 75% of the images (1.5 per image, 42 visible pixels each on
average); each large class is in about half of them. The dot class has 1/125
of the background's pixels and under 1/4 of the triangle's: the class
imbalance is real.

Determinism and splits (as shapes.py): image i of seed s is drawn from its own
generator np.random.default_rng([s, i]), so the same (n, size, seed) gives
identical arrays and generate(m, size, s) is the first m images of
generate(n, size, s) for m <= n.

    seed 0   training split
    seed 1   held-out split (evaluation, golden files, end-to-end tests)

write_dir(dir, images, labels) writes NNNN.png (RGB), NNNN_labels.png (8-bit
grey, pixel value = class index) and labels.json {"classes": CLASSES, "files":
[{"image": "NNNN.png", "labels": "NNNN_labels.png"}, ...]}.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from tfmodels.zoo import shapes

CLASSES = ["background", "circle", "square", "triangle", "dot"]
BACKGROUND, DOT = 0, 4
TRAIN_SEED = 0
HELDOUT_SEED = 1
SIZE = 96  # the size the trained model (train_seg.py) uses

BIG_MIN, BIG_MAX = 0.2, 0.45  # large shapes' nominal size, fraction of the image side
DOT_MIN, DOT_MAX = 0.055, 0.095  # dot diameter, fraction of the image side
MAX_BIG, MAX_DOTS = 3, 3
MIN_INSIDE = 0.9  # fraction of a large shape's area inside the image
MIN_VISIBLE = 0.8  # fraction of every object's full area that stays visible
_TRIES = 40


def _place(rng: np.random.Generator, size: int, dot: bool, kind: int):
    """Draws a placement: (mask over the image, full area) or None when it falls mostly outside."""
    if dot:
        d = rng.uniform(DOT_MIN, DOT_MAX) * size
        cx, cy = rng.uniform(d / 2 + 1, size - d / 2 - 1, 2)
        m = shapes._raster(0, cx, cy, d, 0.0, 0, size, 0, size)
        return m, int(m.sum())  # entirely inside: the visible raster is the whole disc
    s = rng.uniform(BIG_MIN, BIG_MAX) * size
    theta = rng.uniform(0, 2 * math.pi) if kind else 0.0
    cx, cy = rng.uniform(0, size, 2)
    m = shapes._raster(kind, cx, cy, s, theta, 0, size, 0, size)
    full = shapes._full_area(kind, cx, cy, s, theta)
    if full == 0 or m.sum() < MIN_INSIDE * full:
        return None
    return m, full


def _one(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    bg, sigma = shapes._background(rng, size)
    img = bg.copy()
    label = np.zeros((size, size), np.uint8)
    n_big = int(rng.integers(1, MAX_BIG + 1))
    n_dot = int(rng.integers(0, MAX_DOTS + 1))
    # class of each object in drawing order: large shapes 1..3, dots DOT
    objs = [1 + int(rng.integers(3)) for _ in range(n_big)] + [DOT] * n_dot
    objs = [objs[j] for j in rng.permutation(len(objs))]
    placed = []  # {"mask" (visible so far), "full", "color"}
    for cls in objs:
        dot = cls == DOT
        for _try in range(_TRIES):
            p = _place(rng, size, dot, cls - 1)
            if p is None:
                continue
            m, full = p
            if m.any() and all((q["mask"] & ~m).sum() >= MIN_VISIBLE * q["full"] for q in placed):
                break
        else:
            continue  # no room for this object
        avoid = [bg[m].mean(axis=0)] + [q["color"] for q in placed if (q["mask"] & m).any()]
        color = shapes._pick_color(rng, avoid)
        for q in placed:
            q["mask"] &= ~m
        img[m] = color
        label[m] = cls
        placed.append({"mask": m, "full": full, "color": color})
    img = img + rng.normal(0, sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), label


def generate(n: int, size: int = SIZE, seed: int = TRAIN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """n images of size x size and their label maps (see the module docstring)."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    for i in range(n):
        images[i], labels[i] = _one(np.random.default_rng([seed, i]), size)
    return images, labels


def frequencies(labels: np.ndarray) -> np.ndarray:
    """Pixel frequency of each class: float64 [len(CLASSES)] summing to 1."""
    counts = np.bincount(np.asarray(labels, np.int64).ravel(), minlength=len(CLASSES))
    return counts / counts.sum()


def write_dir(dir: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes <dir>/NNNN.png (RGB), <dir>/NNNN_labels.png (8-bit grey, pixel =
    class index) and <dir>/labels.json {"classes": CLASSES, "files":
    [{"image": "NNNN.png", "labels": "NNNN_labels.png"}, ...]}."""
    from PIL import Image

    os.makedirs(dir, exist_ok=True)
    files = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        name = f"{i:04d}"
        Image.fromarray(np.asarray(img, np.uint8), "RGB").save(os.path.join(dir, name + ".png"))
        Image.fromarray(np.asarray(lab, np.uint8), "L").save(os.path.join(dir, name + "_labels.png"))
        files.append({"image": name + ".png", "labels": name + "_labels.png"})
    with open(os.path.join(dir, "labels.json"), "w") as f:
        json.dump({"classes": CLASSES, "files": files}, f, indent=1)


def read_dir(dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of write_dir: (images, labels) in labels.json order."""
    from PIL import Image

    with open(os.path.join(dir, "labels.json")) as f:
        meta = json.load(f)
    if meta["classes"] != CLASSES:
        raise ValueError(f"{dir}: classes {meta['classes']} != {CLASSES}")
    images = np.stack([np.asarray(Image.open(os.path.join(dir, e["image"])).convert("RGB")) for e in meta["files"]])
    labels = np.stack([np.asarray(Image.open(os.path.join(dir, e["labels"]))) for e in meta["files"]])
    return images, labels
