"""Generated scenes of identities.py's faces among face-like distractors: detection data for a
face detector whose crops feed the identity embedding (detect -> crop -> embed).

Nothing is downloaded; every scene is drawn with NumPy from fixed seeds, with identities.py's
faces and nuisance and shapes.py's backgrounds.

    images, objects = generate(n, split)     split "train" or "heldout"
    images, heads, distractors = generate_scenes(n, split)     Head and Distractor records

* images: uint8 [n, SIZE, SIZE, 3] RGB, SIZE = 128 (faster_rcnn.TINY's input).
* objects[i]: the heads of scene i, a list of dicts
      {"class": 0,                  the one label, "face"
       "box": (x1, y1, x2, y2),     float pixels, the tight box of the head DISC:
                                    x1 = min column, x2 = max column + 1, as shapes.py
       "identity": int}             identities.py's identity id
  The distractors are not objects: a detector must learn to leave them alone.

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
    distractors 1..MAX_DISTRACTORS (uniform) objects that are not faces, each of a kind drawn
                with KIND_P from KINDS, its colour uniform in COLOR per channel (as a head's):
                  "disc"      0.4  a plain head: a disc of radius RADIUS with no parts, placed
                                   as a head is (its crop inside the image), rotation as a head's
                  "partial"   0.2  the same disc with 1 or 2 (equally likely) of a face's four
                                   part slots (left eye, right eye, mouth, mark), each part drawn
                                   alone in identities.pattern's ranges, kinds and colours (the
                                   eyes not paired): never a whole face
                  "square"    0.2  shapes.py's square, side SIDE 24..44 px, any angle,
                  "triangle"  0.2  shapes.py's triangle, side 24..44 px, any angle; both wholly
                                   inside the image
                placed (TRIES draws each, else left out) so that nothing it paints (a disc's
                pixels within REACH 1.15 radii, room for parts) touches a head's disc grown by
                REACH, or takes more than CROP_OVERLAP (5%) of the pixels of a head's crop (it
                may touch a crop, never cover the head), or touches an earlier distractor.
                They are painted before the heads, and drawn from the scene's generator after
                the heads' layout: the heads (positions, sizes, identities) are those the
                scenes held before they had distractors (the lighting and noise drawn after
                them are not). The first 2000 training scenes hold 0, 1,
                2, 3 distractors 112, 916, 725 and 247 times (3107: 1046 discs, 530 partial
                faces (268 with one part), 721 squares, 810 triangles); 1.85, 1.51 and 1.00 per
                scene beside 1, 2 and 3 heads. The first 300 held-out scenes: 475 (164 discs,
                81 partial faces (39 with one part), 112 squares, 118 triangles).
    lighting    identities.py's, once over the whole scene: contrast 0.8..1.2 around 128,
                brightness -20..20, a colour cast (gain 0.92..1.08 per channel)
    noise       Gaussian, the background's sigma capped at identities.NOISE_MAX
MARGIN = 1/3 makes the crop side 1 / identities.HEAD = 3.33 head radii: resized to 64 x 64 (what
the embed plugin feeds ident_facenet) the head radius is 0.3 of the side, identities.py's
nominal pose. RADIUS 15..20 px gives crops of 50..67 px, near 64 (identities.py draws heads of
16..22 px at 64). Parts of a face can reach 1.1 radii from its centre, just past the disc.
Crops of the true boxes of the first 300 held-out scenes (547 heads), cut as daemon/crop cuts
them and resized bilinearly to 64 x 64, get their identity as ident_facenet's nearest gallery
identity (identities.py's gallery) for 0.973 of the heads at MARGIN 1/3 (with ident_facenet as
trained when this was written). Before the scenes had distractors: 0.976 at 1/3, 0.989 at
0.25, 0.956 at 0.4, 0.920 at 0.5: a wider crop shrinks the head below the scale the embedding
learnt. A distractor in a crop disturbs the embedding: CROP_OVERLAP 0 also gives 0.973, 0.1
or 0.2 give 0.956.

SPLITS (identities and scene seeds both apart):
    "train"    identities.TRAIN_IDS, seed TRAIN_SEED 0    (the detector trains on these)
    "heldout"  identities.HELDOUT_IDS, seed HELDOUT_SEED 1  (unseen by the detector and by
               the embedding models; the gallery of identities.py's protocol)
The same (n, split) gives identical arrays, and generate(m, split) is the first m scenes of
generate(n, split) for m <= n.

write_dir(dir, images, objects[, distractors]) writes a set as files for the end-to-end tests:
<dir>/NNNN.png and <dir>/labels.json
    {"size": 128, "margin": MARGIN,
     "scenes": [{"image": "0000.png", "heads": [{"identity": "id1003", "box": [x1, y1, x2, y2]}],
                 "distractors": [{"kind": "disc", "box": [x1, y1, x2, y2]}]}]}
(a distractor's box is its outline's tight box: a disc's without its parts; [] without
distractors given).
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

# Distractors: unlabelled objects that are not faces (see the module docstring).
MAX_DISTRACTORS = 3
KINDS = ("disc", "partial", "square", "triangle")
KIND_P = (0.4, 0.2, 0.2, 0.2)
SIDE = (24.0, 44.0)  # square and triangle side, pixels at SIZE
COLOR = (40.0, 215.0)  # every distractor's colour, per channel: identities.pattern's head colours
REACH = 1.15  # a head's keep-out disc, in head radii (its parts reach 1.1)
CROP_OVERLAP = 0.05  # the most of a head crop's pixels a distractor may take


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
        return _box(self.disc(size))


@dataclasses.dataclass(frozen=True)
class Distractor:
    kind: str  # one of KINDS
    cx: float  # centre, pixels (y down)
    cy: float
    size: float  # "disc", "partial": the radius; "square", "triangle": the side (shapes.py's size)
    phi: float  # rotation, radians (clockwise on screen)
    color: tuple  # RGB 0..255 of the disc, square or triangle
    parts: tuple = ()  # "partial": 1 or 2 identities.Part, drawn as identities.draw draws a face's

    def mask(self, size: int = SIZE) -> np.ndarray:
        """Bool [size, size]: the outline's pixels (the disc without its parts)."""
        if self.kind in ("disc", "partial"):
            return shapes._raster(0, self.cx, self.cy, 2.0 * self.size, 0.0, 0, size, 0, size)
        kind = 1 if self.kind == "square" else 2
        return shapes._raster(kind, self.cx, self.cy, self.size, self.phi, 0, size, 0, size)

    def reach(self, size: int = SIZE) -> np.ndarray:
        """Bool [size, size]: every pixel it may paint (a disc's grown by REACH for its parts)."""
        if self.kind in ("disc", "partial"):
            return shapes._raster(0, self.cx, self.cy, 2.0 * REACH * self.size, 0.0, 0, size, 0, size)
        return self.mask(size)

    def box(self, size: int = SIZE) -> tuple[float, float, float, float]:
        """The tight box (x1, y1, x2, y2) of the outline's pixels, x2/y2 exclusive."""
        return _box(self.mask(size))

    def draw(self, canvas: np.ndarray) -> np.ndarray:
        """Paints it onto canvas (float [S, S, 3], in place)."""
        if self.kind in ("disc", "partial"):
            return identities.draw(identities.Pattern(self.color, self.parts), canvas, self.cx, self.cy, self.size,
                                   self.phi)
        canvas[self.mask(canvas.shape[0])] = self.color
        return canvas


def _box(m: np.ndarray) -> tuple[float, float, float, float]:
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


# A partial face's part slots: identities.pattern's ranges (x, y, size in radii), the eyes unpaired
_SLOTS = {"left eye": ((-0.5, -0.3), (-0.45, -0.15), (0.4, 0.6)),
          "right eye": ((0.3, 0.5), (-0.45, -0.15), (0.4, 0.6)),
          "mouth": ((-0.2, 0.2), (0.3, 0.55), (0.45, 0.75))}


def _parts(rng: np.random.Generator, head: np.ndarray, n: int) -> tuple:
    """n of a face's four part slots (left eye, right eye, mouth, mark), each drawn alone as
    identities.pattern draws that part: its own kind, angle and colour."""
    parts: list[identities.Part] = []
    for slot in rng.choice(4, n, replace=False):
        if slot < 3:
            xr, yr, sr = _SLOTS[("left eye", "right eye", "mouth")[slot]]
            x, y = rng.uniform(*xr), rng.uniform(*yr)
        else:  # the mark
            r, a = rng.uniform(0.3, 0.7), rng.uniform(0, 2 * math.pi)
            x, y, sr = r * math.cos(a), r * math.sin(a), (0.35, 0.55)
        s, kind, theta = rng.uniform(*sr), int(rng.integers(3)), rng.uniform(0, 2 * math.pi)
        near = [p.color for p in parts if math.hypot(p.x - x, p.y - y) < (p.size + s) * 0.75]
        color = shapes._pick_color(rng, [head] + [np.asarray(c) for c in near])
        parts.append(identities.Part(kind, float(x), float(y), float(s), float(theta), tuple(float(c) for c in color)))
    return tuple(parts)


def _candidate(rng: np.random.Generator, kind: str, size: int) -> Distractor:
    """One draw of a distractor of kind, placed as a head would be (discs) or anywhere inside."""
    color = rng.uniform(*COLOR, 3)
    if kind in ("disc", "partial"):
        r = rng.uniform(*RADIUS)
        half = r * (1.0 + 2.0 * MARGIN)
        cx, cy = rng.uniform(half, size - half, 2)
        phi = rng.uniform(-identities.ROTATION, identities.ROTATION)
        parts = _parts(rng, color, int(rng.integers(1, 3))) if kind == "partial" else ()
        return Distractor(kind, float(cx), float(cy), float(r), float(phi), tuple(float(c) for c in color), parts)
    s = rng.uniform(*SIDE)
    e = s / (math.sqrt(2.0) if kind == "square" else math.sqrt(3.0))  # the circumradius
    cx, cy = rng.uniform(e, size - e, 2)
    return Distractor(kind, float(cx), float(cy), float(s), float(rng.uniform(0, 2 * math.pi)),
                      tuple(float(c) for c in color))


def distractors(rng: np.random.Generator, heads: list[Head], size: int = SIZE) -> list[Distractor]:
    """The distractors of one scene around its heads (see the module docstring), in drawing order."""
    n = int(rng.integers(1, MAX_DISTRACTORS + 1))
    kinds = rng.choice(len(KINDS), n, p=KIND_P)
    keep_out = np.zeros((size, size), bool)
    for h in heads:
        keep_out |= shapes._raster(0, h.cx, h.cy, 2.0 * REACH * h.radius, 0.0, 0, size, 0, size)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    crops = []
    for h in heads:
        x1, y1, x2, y2 = h.crop()
        crops.append((xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2))
    out: list[Distractor] = []
    for k in kinds:
        for _ in range(TRIES):
            d = _candidate(rng, KINDS[k], size)
            m = d.reach(size)
            if (m & keep_out).any() or any((m & c).sum() > CROP_OVERLAP * c.sum() for c in crops):
                continue
            out.append(d)
            keep_out |= m
            break
    return out


def scene(i: int, seed: int, ids, size: int = SIZE) -> tuple[np.ndarray, list[Head], list[Distractor]]:
    """Scene i of seed (identities from ids): uint8 [size, size, 3], its heads and its distractors."""
    rng = np.random.default_rng([STREAM, int(seed), int(i)])
    bg, sigma = shapes._background(rng, size)
    heads = layout(rng, ids, size)
    extra = distractors(rng, heads, size)
    img = bg.copy()
    for d in extra:
        d.draw(img)
    for h in heads:
        identities.draw(identities.pattern(h.identity), img, h.cx, h.cy, h.radius, h.phi)
    contrast = rng.uniform(*identities.CONTRAST)
    brightness = rng.uniform(-identities.BRIGHTNESS, identities.BRIGHTNESS)
    gain = rng.uniform(1 - identities.CAST, 1 + identities.CAST, 3)
    img = ((img - 128.0) * contrast + 128.0 + brightness) * gain
    img = img + rng.normal(0, min(sigma, identities.NOISE_MAX), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), heads, extra


def generate_scenes(n: int, split: str,
                    size: int = SIZE) -> tuple[np.ndarray, list[list[Head]], list[list[Distractor]]]:
    """The first n scenes of split with their Head and Distractor records."""
    seed, ids = SPLITS[split]
    images = np.empty((n, size, size, 3), np.uint8)
    heads, extra = [], []
    for i in range(n):
        images[i], hs, ds = scene(i, seed, ids, size)
        heads.append(hs)
        extra.append(ds)
    return images, heads, extra


def generate_heads(n: int, split: str, size: int = SIZE) -> tuple[np.ndarray, list[list[Head]]]:
    """The first n scenes of split with their Head records."""
    images, heads, _ = generate_scenes(n, split, size)
    return images, heads


def objects(heads: list[list[Head]], size: int = SIZE) -> list[list[dict]]:
    """Each scene's labelled objects (see the module docstring) from its Head records."""
    return [[{"class": 0, "box": h.box(size), "identity": h.identity} for h in hs] for hs in heads]


def generate(n: int, split: str, size: int = SIZE) -> tuple[np.ndarray, list[list[dict]]]:
    """The first n scenes of split and their objects (see the module docstring)."""
    images, heads = generate_heads(n, split, size)
    return images, objects(heads, size)


def write_dir(dir: str, images: np.ndarray, objects: list[list[dict]],
              distractors: list[list[Distractor]] | None = None) -> None:
    """Writes <dir>/NNNN.png and <dir>/labels.json (see the module docstring)."""
    from PIL import Image

    os.makedirs(dir, exist_ok=True)
    scenes = []
    for i, (img, objs) in enumerate(zip(images, objects)):
        name = f"{i:04d}.png"
        Image.fromarray(np.asarray(img, np.uint8), "RGB").save(os.path.join(dir, name))
        ds = distractors[i] if distractors is not None else []
        scenes.append({"image": name, "heads": [{"identity": identities.name(o["identity"]),
                                                 "box": [float(v) for v in o["box"]]} for o in objs],
                       "distractors": [{"kind": d.kind, "box": list(d.box(img.shape[0]))} for d in ds]})
    with open(os.path.join(dir, "labels.json"), "w") as f:
        json.dump({"size": int(images.shape[1]), "margin": MARGIN, "scenes": scenes}, f, indent=1)
