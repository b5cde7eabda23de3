"""A generated identity set: synthetic "faces" for identification and clustering.

Nothing is downloaded; every image is drawn with NumPy from fixed seeds, with
the rasteriser, backgrounds and colour picker of shapes.py. The embedding
models of train_embed.py are trained on it, and the end-to-end tests enrol
and send its images through edgeinferd.

IDENTITY (pattern(identity), a function of the identity id alone): a head (a
disc of radius R, the face unit, in an identity colour) holding four parts,
each a circle, square or triangle (shapes.py's rasteriser) of its own kind,
size, angle and colour (shapes.COLOR_SEPARATION from the head and from the
parts it overlaps, as far as shapes._pick_color finds one):
    eyes   a mirrored pair: x = +-0.3..0.5 R, y = -0.45..-0.15 R (above the
           centre), size 0.4..0.6 R, the right eye's angle mirrored
    mouth  x = -0.2..0.2 R, y = 0.3..0.55 R, size 0.45..0.75 R
    mark   anywhere 0.3..0.7 R from the centre, size 0.35..0.55 R
Sizes are a circle's diameter, a square's side, a triangle's side, as in shapes.py.

IMAGE i of an identity under seed s (image(identity, i, s)), drawn from its own
generator np.random.default_rng([s, identity, i]): the pattern under nuisance
variation,
    pose       head radius 0.3 x 0.85..1.15 of the side (16-22 px at 64 px), centre
               shifted by up to 10% of the side on each axis, rotation -15..15 degrees
    background shapes._background: flat colour with strong noise, or a gradient
               and/or stripes with weak noise
    lighting   contrast 0.8..1.2 around 128, brightness -20..20, a colour cast
               (a gain of 0.92..1.08 per channel), applied to the whole image
    noise      Gaussian, the background's sigma capped at NOISE_MAX (2-15), over
               the whole image
so the same (identity, i, seed) gives identical arrays. Images are RGB uint8,
SIZE x SIZE = 64 x 64 (the zoo's tiny FaceNet input).

SPLITS: identities and image seeds are separate axes.
    TRAIN_IDS        0..999      training identities (the models see only these)
    HELDOUT_IDS      1000..1019  unseen identities enrolled in the evaluation gallery
    DISTRACTOR_IDS   1020..1029  unseen identities never enrolled (must be rejected)
    TRAIN_SEED 0     training images
    GALLERY_SEED 1   gallery (enrolment) images
    PROBE_SEED 2     probe (query) images
The open-set protocol (as with faces): the gallery holds GALLERY_PER_ID images
of each HELDOUT_IDS identity; the probes are PROBE_PER_ID images of each
HELDOUT_IDS and DISTRACTOR_IDS identity, presented in probe_order (a fixed
shuffle, ORDER_SEED). train_embed.py chooses its thresholds on training
identities under the same protocol (gallery and probe seeds, other ids).

REFERENCE DECISIONS (NumPy, the behaviour the Go embed plugin reproduces):
identify() assigns a probe the identity of its nearest gallery embedding
(Euclidean) when that distance is at most a threshold, else "unknown";
online_clusters() gives unlabelled embeddings stable cluster ids in arrival
order.

FILES (for the Go end-to-end tests):
    write_gallery(dir, ids, per_id, seed)  <dir>/id1003/000.png ... (one folder per identity)
    write_probes(dir, ids, per_id, seed)   <dir>/NNNN.png in probe_order and <dir>/labels.json
                                           {"files": [{"image": "0000.png", "identity": "id1003"}, ...]}
    python -m tfmodels.zoo.identities gallery DIR [--ids 1000-1019] [--per-id 5] [--seed 1]
    python -m tfmodels.zoo.identities probes DIR [--ids 1000-1029] [--per-id 20] [--seed 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys

import numpy as np

from tfmodels.zoo import shapes

SIZE = 64
TRAIN_IDS = range(0, 1000)
HELDOUT_IDS = range(1000, 1020)
DISTRACTOR_IDS = range(1020, 1030)
TRAIN_SEED, GALLERY_SEED, PROBE_SEED = 0, 1, 2
ORDER_SEED = 3
GALLERY_PER_ID, PROBE_PER_ID = 5, 20

# pattern(identity) draws from np.random.default_rng([PATTERN_STREAM, identity]): a stream apart
# from every image's [seed, identity, i]
PATTERN_STREAM = 0x1D
HEAD = 0.3  # head radius, fraction of the image side (before the pose's scale)
SCALE = (0.85, 1.15)
SHIFT = 0.1  # fraction of the side, each axis
ROTATION = math.radians(15)
CONTRAST = (0.8, 1.2)
BRIGHTNESS = 20.0
CAST = 0.08  # per-channel gain 1 +- CAST
NOISE_MAX = 15.0  # the background's noise sigma, capped


@dataclasses.dataclass(frozen=True)
class Part:
    kind: int  # shapes.CLASSES index: 0 circle, 1 square, 2 triangle
    x: float  # centre, in head radii from the head centre (y down)
    y: float
    size: float  # in head radii
    theta: float  # radians
    color: tuple  # RGB 0..255


@dataclasses.dataclass(frozen=True)
class Pattern:
    head_color: tuple
    parts: tuple  # Part, in drawing order


def name(identity: int) -> str:
    """The identity's name in file trees and labels: "id1003"."""
    return f"id{int(identity)}"


@functools.lru_cache(maxsize=4096)
def pattern(identity: int) -> Pattern:
    """The identity's face (see the module docstring); a function of the id alone."""
    rng = np.random.default_rng([PATTERN_STREAM, int(identity)])
    head = rng.uniform(40, 215, 3)
    parts = []

    def add(kind, x, y, size, theta):
        near = [p.color for p in parts if math.hypot(p.x - x, p.y - y) < (p.size + size) * 0.75]
        color = shapes._pick_color(rng, [head] + [np.asarray(c) for c in near])
        parts.append(Part(kind, float(x), float(y), float(size), float(theta), tuple(float(c) for c in color)))

    eye_kind = int(rng.integers(3))
    ex, ey = rng.uniform(0.3, 0.5), rng.uniform(-0.45, -0.15)
    es, et = rng.uniform(0.4, 0.6), rng.uniform(0, 2 * math.pi)
    add(eye_kind, -ex, ey, es, et)
    color = parts[-1].color
    parts.append(Part(eye_kind, float(ex), float(ey), float(es), float(-et), color))
    add(int(rng.integers(3)), rng.uniform(-0.2, 0.2), rng.uniform(0.3, 0.55), rng.uniform(0.45, 0.75),
        rng.uniform(0, 2 * math.pi))
    r, a = rng.uniform(0.3, 0.7), rng.uniform(0, 2 * math.pi)
    add(int(rng.integers(3)), r * math.cos(a), r * math.sin(a), rng.uniform(0.35, 0.55), rng.uniform(0, 2 * math.pi))
    return Pattern(tuple(float(c) for c in head), tuple(parts))


def draw(p: Pattern, canvas: np.ndarray, cx: float, cy: float, radius: float, phi: float) -> np.ndarray:
    """Paints the face onto canvas (float [S, S, 3], in place): head centre (cx, cy) px, head
    radius px, rotated by phi radians (clockwise on screen, y down). Returns canvas."""
    size = canvas.shape[0]
    canvas[shapes._raster(0, cx, cy, 2 * radius, 0.0, 0, size, 0, size)] = p.head_color
    c, s = math.cos(phi), math.sin(phi)
    for q in p.parts:
        px = cx + radius * (q.x * c - q.y * s)
        py = cy + radius * (q.x * s + q.y * c)
        canvas[shapes._raster(q.kind, px, py, q.size * radius, q.theta + phi, 0, size, 0, size)] = q.color
    return canvas


def canonical(identity: int, size: int = SIZE) -> np.ndarray:
    """The face without nuisance: centred, upright, nominal size, on mid grey. uint8 [S, S, 3]."""
    img = draw(pattern(identity), np.full((size, size, 3), 128.0), size / 2, size / 2, HEAD * size, 0.0)
    return np.rint(img).astype(np.uint8)


def image(identity: int, i: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Image i of the identity under seed (see the module docstring). uint8 [S, S, 3]."""
    rng = np.random.default_rng([int(seed), int(identity), int(i)])
    radius = HEAD * size * rng.uniform(*SCALE)
    cx, cy = size / 2 + rng.uniform(-SHIFT, SHIFT, 2) * size
    phi = rng.uniform(-ROTATION, ROTATION)
    bg, sigma = shapes._background(rng, size)
    img = draw(pattern(identity), bg.copy(), cx, cy, radius, phi)
    contrast = rng.uniform(*CONTRAST)
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    gain = rng.uniform(1 - CAST, 1 + CAST, 3)
    img = ((img - 128.0) * contrast + 128.0 + brightness) * gain
    img = img + rng.normal(0, min(sigma, NOISE_MAX), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate(ids, per_id: int, seed: int, size: int = SIZE, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images first..first+per_id-1 of every identity in ids, identity-major:
    (uint8 [len(ids) * per_id, S, S, 3], int64 identity ids [len(ids) * per_id])."""
    ids = [int(k) for k in ids]
    images = np.empty((len(ids) * per_id, size, size, 3), np.uint8)
    labels = np.repeat(np.asarray(ids, np.int64), per_id)
    for j, k in enumerate(ids):
        for i in range(per_id):
            images[j * per_id + i] = image(k, first + i, seed, size)
    return images, labels


def probe_order(n: int, seed: int = ORDER_SEED) -> np.ndarray:
    """The fixed presentation order of n probes (a permutation of 0..n-1)."""
    return np.random.default_rng(seed).permutation(n)


# ================================================================ reference decisions


def identify(probes: np.ndarray, gallery: np.ndarray, gallery_ids, threshold: float):
    """Open-set identification by the nearest gallery embedding (Euclidean distance).

    probes [N, D], gallery [M, D] (L2-normalised), gallery_ids [M]. Returns (ids [N], distances
    [N]): the identity of the nearest gallery row (the first on ties), or -1 ("unknown") when its
    distance exceeds threshold."""
    d = np.linalg.norm(np.asarray(probes, np.float64)[:, None] - np.asarray(gallery, np.float64)[None], axis=-1)
    j = np.argmin(d, axis=1)
    dist = d[np.arange(len(d)), j]
    ids = np.asarray(gallery_ids, np.int64)[j]
    return np.where(dist <= threshold, ids, -1), dist


def online_clusters(embeddings: np.ndarray, threshold: float) -> np.ndarray:
    """Online clustering in arrival order, the reference of the Go embed plugin's cluster ids.

    For each embedding e (rows, in order): when clusters exist, d_c = ||e - m_c|| to every centroid
    m_c; if min d_c <= threshold, e joins the nearest cluster (ties: the lowest id) and that cluster
    updates sum_c += e, count_c += 1, m_c = sum_c / ||sum_c||; otherwise e opens a new cluster with
    the next id (ids start at 1 and are never reused), sum = e, m = e. Returns int64 ids [N]."""
    e = np.asarray(embeddings, np.float64)
    out = np.empty(len(e), np.int64)
    sums, cents = [], []
    for i, v in enumerate(e):
        if cents:
            d = np.linalg.norm(np.asarray(cents) - v, axis=1)
            c = int(np.argmin(d))  # the first minimum: the lowest id
            if d[c] <= threshold:
                sums[c] = sums[c] + v
                cents[c] = sums[c] / np.linalg.norm(sums[c])
                out[i] = c + 1
                continue
        sums.append(v.copy())
        cents.append(v.copy())
        out[i] = len(cents)
    return out


# ================================================================ files


def _save(path: str, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(img, np.uint8), "RGB").save(path)


def write_gallery(dir: str, ids, per_id: int = GALLERY_PER_ID, seed: int = GALLERY_SEED, size: int = SIZE) -> None:
    """Writes <dir>/<name(identity)>/NNN.png, images 0..per_id-1 of each identity."""
    for k in ids:
        d = os.path.join(dir, name(k))
        os.makedirs(d, exist_ok=True)
        for i in range(per_id):
            _save(os.path.join(d, f"{i:03d}.png"), image(k, i, seed, size))


def write_probes(dir: str, ids, per_id: int = PROBE_PER_ID, seed: int = PROBE_SEED, size: int = SIZE,
                 order_seed: int | None = ORDER_SEED) -> None:
    """Writes the probes generate(ids, per_id, seed) as <dir>/NNNN.png in probe_order(order_seed)
    (identity-major for order_seed None) and <dir>/labels.json
    {"files": [{"image": "NNNN.png", "identity": name}, ...]} in file order."""
    images, labels = generate(ids, per_id, seed, size)
    order = np.arange(len(images)) if order_seed is None else probe_order(len(images), order_seed)
    os.makedirs(dir, exist_ok=True)
    files = []
    for n, j in enumerate(order):
        f = f"{n:04d}.png"
        _save(os.path.join(dir, f), images[j])
        files.append({"image": f, "identity": name(labels[j])})
    with open(os.path.join(dir, "labels.json"), "w") as fh:
        json.dump({"files": files}, fh, indent=1)


def parse_ids(text: str) -> list[int]:
    """"1000-1019,1025" -> [1000, ..., 1019, 1025] (inclusive ranges, comma-separated)."""
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("gallery", help="one folder of images per identity")
    g.add_argument("dir")
    g.add_argument("--ids", default=f"{HELDOUT_IDS.start}-{HELDOUT_IDS.stop - 1}")
    g.add_argument("--per-id", type=int, default=GALLERY_PER_ID)
    g.add_argument("--seed", type=int, default=GALLERY_SEED)
    p = sub.add_parser("probes", help="shuffled probe images and labels.json")
    p.add_argument("dir")
    p.add_argument("--ids", default=f"{HELDOUT_IDS.start}-{DISTRACTOR_IDS.stop - 1}")
    p.add_argument("--per-id", type=int, default=PROBE_PER_ID)
    p.add_argument("--seed", type=int, default=PROBE_SEED)
    p.add_argument("--order-seed", type=int, default=ORDER_SEED)
    for q in (g, p):
        q.add_argument("--size", type=int, default=SIZE)
    args = ap.parse_args(argv)
    ids = parse_ids(args.ids)
    if args.what == "gallery":
        write_gallery(args.dir, ids, args.per_id, args.seed, args.size)
    else:
        write_probes(args.dir, ids, args.per_id, args.seed, args.size, args.order_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
