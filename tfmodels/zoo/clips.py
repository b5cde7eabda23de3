"""A generated video-clip data set: one shape that moves or changes size.

Nothing is downloaded; every clip is drawn with NumPy from a fixed seed, with
the rasteriser, backgrounds and colour choice of shapes.py (the detection set).
It trains and tests the video model (train_video.py: a frame CNN whose
features an LSTM reads over N sampled frames), and the Go end-to-end tests
encode its clips into video files (`write` below).

    frames, labels = generate(n, seed)       # uint8 [n, FRAMES, SIZE, SIZE, 3], int64 [n]
    c = clip(seed, i)                         # one clip with its ground truth (Clip)

CLASSES = left, right, up, down, grow, shrink: what the shape does over the
clip. Clip i has class i % 6 (so the first 6k clips are balanced); everything else
is drawn from its own generator np.random.default_rng([seed, i]):

* one shape: circle, square or triangle (shapes._raster), flat colour at least
  shapes.COLOR_SEPARATION from the background's mean colour (shapes._pick_color);
  squares and triangles start at a random angle and turn by up to
  +-MAX_SPIN rad per frame;
* a static background (shapes._background: flat with strong noise, or a
  gradient and/or stripes with weak noise); fresh noise on every frame, over
  the shape too;
* left/right/up/down: nominal size MOVE_SIZE = 20%-34% of the side (circle
  diameter, square side, triangle side), constant; speed SPEED = 0.6-1.3 px
  per frame along the direction (14-30 px over the clip at 48 px), plus a
  drift of at most DRIFT px per frame across it; the centre stays within
  MARGIN..1-MARGIN of the side (the shape may cross the border a little);
* grow/shrink: the size changes linearly from s to s * RATIO (1.8-2.6; the
  area 3.2-6.8 times) or back, s = GROW_SIZE = 16%-26% of the side, at most
  MAX_SIZE; the centre drifts by at most DRIFT px per frame in x and y and
  keeps the largest shape mostly inside.

The smallest motion per frame (0.6 px of a 48 px frame) is why a clip has
FRAMES = 24 frames: a model sees it over a few frames, as when N = 8 frames
are sampled evenly from the clip, at a fixed rate, or fewer from a short window.

Determinism and splits: the same (n, seed) gives identical arrays, and
generate(m, s) is the first m clips of generate(n, s) for m <= n.

    seed 0   training split
    seed 1   held-out split (evaluation, golden files, end-to-end tests)

    python -m tfmodels.zoo.clips write DIR --n 12 --seed 1

writes DIR/clip_NNNN/frame_NNN.png (RGB, one per frame) and DIR/labels.json
{"classes": CLASSES, "clips": [{"dir": "clip_0000", "label": "left", "class": 0,
"frames": FRAMES}, ...]}, for tests that encode each clip into a video (ffmpeg).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

import numpy as np

from tfmodels.zoo import shapes

CLASSES = ["left", "right", "up", "down", "grow", "shrink"]
LEFT, RIGHT, UP, DOWN, GROW, SHRINK = range(6)
KINDS = shapes.CLASSES  # circle, square, triangle
TRAIN_SEED = 0
HELDOUT_SEED = 1
SIZE = 48  # frame side, pixels
FRAMES = 24  # frames per clip

MOVE_SIZE = (0.20, 0.34)  # nominal size of a moving shape, fraction of the side
SPEED = (0.6, 1.3)  # px per frame along the direction of motion
DRIFT = 0.2  # largest drift, px per frame, across the motion (movers) or in x and y (grow/shrink)
MARGIN = 0.15  # a mover's centre stays within MARGIN..1-MARGIN of the side
GROW_SIZE = (0.16, 0.26)  # smaller size of a growing/shrinking shape, fraction of the side
RATIO = (1.8, 2.6)  # larger size / smaller size
MAX_SIZE = 0.7  # largest size, fraction of the side
MAX_SPIN = 0.05  # rad per frame (squares and triangles)

# unit vector (dx, dy) of each motion class, y down as in the image
DIRECTIONS = {LEFT: (-1.0, 0.0), RIGHT: (1.0, 0.0), UP: (0.0, -1.0), DOWN: (0.0, 1.0)}


@dataclasses.dataclass
class Clip:
    """One clip and its ground truth (masks and per-frame geometry, for tests)."""

    frames: np.ndarray  # uint8 [FRAMES, SIZE, SIZE, 3]
    label: int  # index into CLASSES
    kind: int  # index into KINDS
    masks: np.ndarray  # bool [FRAMES, SIZE, SIZE], the shape's pixels
    centers: np.ndarray  # float64 [FRAMES, 2], (cx, cy) in pixels
    sizes: np.ndarray  # float64 [FRAMES], nominal size in pixels


def _trajectory(rng: np.random.Generator, label: int, size: int, frames: int):
    """Centres [frames, 2] and sizes [frames] of the shape."""
    t = np.arange(frames, dtype=np.float64)
    span = frames - 1
    lo, hi = MARGIN * size, (1 - MARGIN) * size
    if label in DIRECTIONS:
        s = rng.uniform(*MOVE_SIZE) * size
        speed = rng.uniform(*SPEED)
        travel = speed * span
        drift = rng.uniform(-DRIFT, DRIFT)
        side = DRIFT * span / 2  # room for the drift across the motion
        along0 = rng.uniform(lo, hi - travel)  # the start of a motion in the + direction
        across0 = rng.uniform(lo + side, hi - side)
        dx, dy = DIRECTIONS[label]
        if dx + dy < 0:  # left or up: start at the far end
            along0 += travel
        along = along0 + (dx + dy) * speed * t
        across = across0 + drift * (t - span / 2)
        centers = np.stack([along, across] if dx else [across, along], axis=1)
        return centers, np.full(frames, s)
    small = rng.uniform(*GROW_SIZE) * size
    big = min(small * rng.uniform(*RATIO), MAX_SIZE * size)
    grow = np.linspace(small, big, frames)
    sizes = grow if label == GROW else grow[::-1].copy()
    drift = rng.uniform(-DRIFT, DRIFT, 2)
    room = 0.4 * big + DRIFT * span / 2
    c0 = rng.uniform(room, size - room, 2)
    centers = c0[None, :] + drift[None, :] * (t - span / 2)[:, None]
    return centers, sizes


def clip(seed: int, i: int, size: int = SIZE, frames: int = FRAMES) -> Clip:
    """Clip i of split seed (see the module docstring)."""
    rng = np.random.default_rng([seed, i])
    label = i % len(CLASSES)
    kind = int(rng.integers(len(KINDS)))
    bg, sigma = shapes._background(rng, size)
    color = shapes._pick_color(rng, [bg.reshape(-1, 3).mean(axis=0)])
    centers, sizes = _trajectory(rng, label, size, frames)
    theta0 = rng.uniform(0, 2 * math.pi) if kind else 0.0
    spin = rng.uniform(-MAX_SPIN, MAX_SPIN) if kind else 0.0
    out = np.empty((frames, size, size, 3), np.uint8)
    masks = np.empty((frames, size, size), bool)
    for t in range(frames):
        m = shapes._raster(kind, centers[t, 0], centers[t, 1], sizes[t], theta0 + spin * t, 0, size, 0, size)
        img = bg.copy()
        img[m] = color
        img += rng.normal(0, sigma, img.shape)
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        masks[t] = m
    return Clip(out, label, kind, masks, centers, sizes)


def generate(n: int, seed: int = TRAIN_SEED, size: int = SIZE, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """n clips: frames uint8 [n, frames, size, size, 3] and labels int64 [n]."""
    out = np.empty((n, frames, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        c = clip(seed, i, size, frames)
        out[i], labels[i] = c.frames, c.label
    return out, labels


def write_clip_frames(dir: str, frames: np.ndarray) -> None:
    """Writes one clip's frames (uint8 [T, H, W, 3]) as <dir>/frame_NNN.png, RGB."""
    from PIL import Image

    os.makedirs(dir, exist_ok=True)
    for t, f in enumerate(frames):
        Image.fromarray(np.asarray(f, np.uint8), "RGB").save(os.path.join(dir, f"frame_{t:03d}.png"))


def write(dir: str, n: int, seed: int = HELDOUT_SEED) -> dict:
    """Writes the first n clips of split seed as <dir>/clip_NNNN/frame_NNN.png and
    <dir>/labels.json; returns the labels.json content."""
    entries = []
    for i in range(n):
        c = clip(seed, i)
        name = f"clip_{i:04d}"
        write_clip_frames(os.path.join(dir, name), c.frames)
        entries.append({"dir": name, "label": CLASSES[c.label], "class": c.label, "frames": len(c.frames)})
    meta = {"classes": CLASSES, "clips": entries}
    with open(os.path.join(dir, "labels.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write clips as PNG frames plus labels.json")
    w.add_argument("dir")
    w.add_argument("--n", type=int, default=12, help="number of clips (default 12)")
    w.add_argument("--seed", type=int, default=HELDOUT_SEED, help="split seed (default 1, held out)")
    args = ap.parse_args(argv)
    meta = write(args.dir, args.n, args.seed)
    print(f"{len(meta['clips'])} clips of {FRAMES} frames ({SIZE}x{SIZE}) -> {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
