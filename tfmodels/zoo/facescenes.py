"""Generated scenes of identities.py's faces: detection data for a face detector whose crops
feed the identity embedding (detect -> crop -> embed).

Nothing is downloaded; every scene is drawn with NumPy from fixed seeds, with identities.py's
faces and nuisance and shapes.py's backgrounds.

    images, objects = generate(n, split)     split "train" or "heldout"

* images: uint8 [n, SIZE, SIZE, 3] RGB, SIZE = 128 (faster_rcnn.TINY's input).
* objects[i]: the heads of scene i, a list of dicts
      {"class": 0,                  the one label, "face"
       "box": (x1, y1, x2, y2),     float pixels, the tight box of the head DISC:
                                    x1 = min column, x2 = max column + 1, as shapes.py
       "identity": int}             identities.py's identity id

SCENE i of seed s, drawn from its own generator np.random.default_rng([STREAM, s, i]):
    background  shapes._background (flat colour with strong noise, or a gradient and/or
                stripes with weak noise)
    heads       1..MAX_HEADS (uniform), distinct identities drawn from the split's ids, each
                identities.draw(pattern(identity)) with radius RADIUS px (uniform) and
                rotation -15..15 degrees (identities.ROTATION), at a uniform position such
                that its CROP (the box widened by MARGIN of its width on each side, as
                daemon/crop widens a detection) lies inside the image and holds no part of
                another head's disc; a head that finds no such place in TRIES draws is left
                out (10% of the heads asked for: the first 2000 training scenes hold 1, 2 and
                3 heads 809, 814 and 377 times, 3568 heads in all)
    lighting    identities.py's, once over the whole scene: contrast 0.8..1.2 around 128,
                brightness -20..20, a colour cast (gain 0.92..1.08 per channel)
    noise       Gaussian, the background's sigma capped at identities.NOISE_MAX
MARGIN = 1/3 makes the crop side 1 / identities.HEAD = 3.33 head radii: resized to 64 x 64 (what
the embed plugin feeds ident_facenet) the head radius is 0.3 of the side, identities.py's
nominal pose. RADIUS 15..20 px gives crops of 50..67 px, near 64 (identities.py draws heads of
16..22 px at 64). Parts of a face can reach 1.1 radii from its centre, just past the disc.
Crops of the true boxes of the first 300 held-out scenes (547 heads), cut as daemon/crop cuts
them and resized bilinearly to 64 x 64, get their identity as ident_facenet's nearest gallery
identity (identities.py's gallery) for 0.976 of the heads at MARGIN 1/3; 0.989 at 0.25, 0.956
at 0.4, 0.920 at 0.5: a wider crop shrinks the head below the scale the embedding learnt.

SPLITS (identities and scene seeds both apart):
    "train"    identities.TRAIN_IDS, seed TRAIN_SEED 0    (the detector trains on these)
    "heldout"  identities.HELDOUT_IDS, seed HELDOUT_SEED 1  (unseen by the detector and by
               the embedding models; the gallery of identities.py's protocol)
The same (n, split) gives identical arrays, and generate(m, split) is the first m scenes of
generate(n, split) for m <= n.

write_dir(dir, images, objects) writes a set as files for the end-to-end tests:
<dir>/NNNN.png and <dir>/labels.json
    {"size": 128, "margin": MARGIN,
     "scenes": [{"image": "0000.png", "heads": [{"identity": "id1003", "box": [x1, y1, x2, y2]}]}]}
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from tfmodels.zoo import identities, shapes

SIZE = 128
CLASSES = ["face"]
TRAIN_SEED, HELDOUT_SEED = 0, 1
SPLITS = {"train": (TRAIN_SEED, identities.TRAIN_IDS), "heldout": (HELDOUT_SEED, identities.HELDOUT_IDS)}
STREAM = 0xFACE  # scene i of seed s draws from default_rng([STREAM, s, i]), apart from shapes.py's and identities.py's
MAX_HEADS = 3
RADIUS = (15.0, 20.0)  # head radius, pixels at SIZE
MARGIN = (1.0 / (2.0 * identities.HEAD) - 1.0) / 2.0  # 1/3: a crop 1 / HEAD head radii wide
TRIES = 50


@dataclasses.dataclass(frozen=True)
class Head:
    identity: int
    cx: float  # centre, pixels (y down)
    cy: float
    radius: float  # pixels
    phi: float  # rotation, radians (clockwise on screen)

    def crop(self) -> tuple[float, float, float, float]:
        """The nominal crop (x1, y1, x2, y2): the disc's box widened by MARGIN on each side."""
        h = self.radius * (1.0 + 2.0 * MARGIN)
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h

    def disc(self, size: int = SIZE) -> np.ndarray:
        """Bool [size, size]: the head disc's pixels (shapes.py's rasteriser, pixel centres)."""
        return shapes._raster(0, self.cx, self.cy, 2.0 * self.radius, 0.0, 0, size, 0, size)

    def box(self, size: int = SIZE) -> tuple[float, float, float, float]:
        """The tight box (x1, y1, x2, y2) of the disc's pixels, x2/y2 exclusive."""
        m = self.disc(size)
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _clear(a: Head, b: Head) -> bool:
    """Neither head's disc reaches into the other's crop."""
    for h, other in ((a, b), (b, a)):
        x1, y1, x2, y2 = h.crop()
        dx = max(x1 - other.cx, 0.0, other.cx - x2)
        dy = max(y1 - other.cy, 0.0, other.cy - y2)
        if math.hypot(dx, dy) < other.radius:
            return False
    return True


def layout(rng: np.random.Generator, ids, size: int = SIZE) -> list[Head]:
    """The heads of one scene (see the module docstring), in drawing order."""
    n = int(rng.integers(1, MAX_HEADS + 1))
    chosen = rng.choice(np.asarray(list(ids), np.int64), n, replace=False)
    heads: list[Head] = []
    for k in chosen:
        for _ in range(TRIES):
            r = rng.uniform(*RADIUS)
            half = r * (1.0 + 2.0 * MARGIN)
            cx, cy = rng.uniform(half, size - half, 2)
            h = Head(int(k), float(cx), float(cy), float(r), float(rng.uniform(-identities.ROTATION, identities.ROTATION)))
            if all(_clear(h, o) for o in heads):
                heads.append(h)
                break
    return heads


def scene(i: int, seed: int, ids, size: int = SIZE) -> tuple[np.ndarray, list[Head]]:
    """Scene i of seed (identities from ids): uint8 [size, size, 3] and its heads."""
    rng = np.random.default_rng([STREAM, int(seed), int(i)])
    bg, sigma = shapes._background(rng, size)
    heads = layout(rng, ids, size)
    img = bg.copy()
    for h in heads:
        identities.draw(identities.pattern(h.identity), img, h.cx, h.cy, h.radius, h.phi)
    contrast = rng.uniform(*identities.CONTRAST)
    brightness = rng.uniform(-identities.BRIGHTNESS, identities.BRIGHTNESS)
    gain = rng.uniform(1 - identities.CAST, 1 + identities.CAST, 3)
    img = ((img - 128.0) * contrast + 128.0 + brightness) * gain
    img = img + rng.normal(0, min(sigma, identities.NOISE_MAX), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), heads


def generate_heads(n: int, split: str, size: int = SIZE) -> tuple[np.ndarray, list[list[Head]]]:
    """The first n scenes of split with their Head records."""
    seed, ids = SPLITS[split]
    images = np.empty((n, size, size, 3), np.uint8)
    heads = []
    for i in range(n):
        images[i], hs = scene(i, seed, ids, size)
        heads.append(hs)
    return images, heads


def generate(n: int, split: str, size: int = SIZE) -> tuple[np.ndarray, list[list[dict]]]:
    """The first n scenes of split and their objects (see the module docstring)."""
    images, heads = generate_heads(n, split, size)
    return images, [[{"class": 0, "box": h.box(size), "identity": h.identity} for h in hs] for hs in heads]


def write_dir(dir: str, images: np.ndarray, objects: list[list[dict]]) -> None:
    """Writes <dir>/NNNN.png and <dir>/labels.json (see the module docstring)."""
    from PIL import Image

    os.makedirs(dir, exist_ok=True)
    scenes = []
    for i, (img, objs) in enumerate(zip(images, objects)):
        name = f"{i:04d}.png"
        Image.fromarray(np.asarray(img, np.uint8), "RGB").save(os.path.join(dir, name))
        scenes.append({"image": name, "heads": [{"identity": identities.name(o["identity"]),
                                                 "box": [float(v) for v in o["box"]]} for o in objs]})
    with open(os.path.join(dir, "labels.json"), "w") as f:
        json.dump({"size": int(images.shape[1]), "margin": MARGIN, "scenes": scenes}, f, indent=1)
