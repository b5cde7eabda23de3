"""Tests for the generated video clips (clips.py): determinism, splits, and that every clip
does what its label says, measured on the shape's own pixels.

    .venv/bin/python -m pytest -q tfmodels/zoo/test_clips.py
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfmodels.zoo import clips as C

SPAN = C.FRAMES - 1


def centroids_and_areas(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of bool masks [T, H, W]: the centroid (x, y) of the pixels (pixel centres) and their count."""
    t, h, w = masks.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    area = masks.reshape(t, -1).sum(1).astype(np.float64)
    cx = (masks * xs).reshape(t, -1).sum(1) / area
    cy = (masks * ys).reshape(t, -1).sum(1) / area
    return np.stack([cx, cy], 1), area


def motion_class(masks: np.ndarray) -> int:
    """The class a clip's masks [T, H, W] show: grow or shrink when the area changes by more
    than 2x between the first and the last frame, else the larger centroid displacement."""
    c, area = centroids_and_areas(masks)
    if area[-1] > 2 * area[0]:
        return C.GROW
    if area[0] > 2 * area[-1]:
        return C.SHRINK
    dx, dy = c[-1] - c[0]
    if abs(dx) > abs(dy):
        return C.RIGHT if dx > 0 else C.LEFT
    return C.DOWN if dy > 0 else C.UP


@pytest.fixture(scope="module", params=[C.TRAIN_SEED, C.HELDOUT_SEED], ids=["train", "heldout"])
def split(request):
    return [C.clip(request.param, i) for i in range(60)]


def test_classes():
    assert C.CLASSES == ["left", "right", "up", "down", "grow", "shrink"]
    assert [C.LEFT, C.RIGHT, C.UP, C.DOWN, C.GROW, C.SHRINK] == list(range(6))


def test_determinism_prefix_and_splits():
    a, la = C.generate(8, 1)
    b, lb = C.generate(8, 1)
    c, lc = C.generate(3, 1)
    assert a.dtype == np.uint8 and a.shape == (8, C.FRAMES, C.SIZE, C.SIZE, 3)
    assert la.dtype == np.int64 and la.tolist() == [0, 1, 2, 3, 4, 5, 0, 1], "clip i has class i % 6"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a[:3], c)
    np.testing.assert_array_equal(a[5], C.clip(1, 5).frames)
    d, _ = C.generate(8, 0)
    assert not np.array_equal(a, d), "train and held-out clips differ"


def test_motion_is_what_the_label_says(split):
    for i, c in enumerate(split):
        assert c.label == i % 6
        assert motion_class(c.masks) == c.label, f"clip {i}"


def test_movers_move_steadily_and_keep_their_size(split):
    for c in (c for c in split if c.label in C.DIRECTIONS):
        cen, area = centroids_and_areas(c.masks)
        d = np.array(C.DIRECTIONS[c.label])
        along = (cen - cen[0]) @ d
        across = (cen - cen[0]) @ d[::-1]
        # 0.6-1.3 px per frame along the direction (a pixel of raster error either way)
        assert C.SPEED[0] * SPAN - 1.5 <= along[-1] <= C.SPEED[1] * SPAN + 1.5
        assert np.all(np.diff(along[::4]) > 0), "monotone over every 4 frames"
        assert np.abs(across).max() <= C.DRIFT * SPAN + 1.5
        assert 0.7 < area.min() / area.max(), "constant size (rotation and border aside)"


def test_growers_change_area_and_stay_put(split):
    for c in (c for c in split if c.label in (C.GROW, C.SHRINK)):
        cen, area = centroids_and_areas(c.masks)
        a = area if c.label == C.GROW else area[::-1]
        assert a[-1] / a[0] > C.RATIO[0] ** 2 * 0.8
        assert np.all(np.diff(a[::4]) > 0), "monotone over every 4 frames"
        assert np.abs(cen - cen[0]).max() <= C.DRIFT * SPAN + 1.5
        np.testing.assert_allclose(c.sizes, np.linspace(c.sizes[0], c.sizes[-1], C.FRAMES))


def test_frames_show_the_shape_over_fresh_noise(split):
    for c in split[:12]:
        f = c.frames.astype(np.float64)
        for t in (0, C.FRAMES - 1):
            m = c.masks[t]
            assert m.sum() > 20
            inside, outside = f[t][m].mean(0), f[t][~m].mean(0)
            assert np.linalg.norm(inside - outside) > 40, "the shape stands out from the background"
            assert f[t][m].std(0).max() < 35, "a flat colour (plus noise)"
        still = ~(c.masks[0] | c.masks[1])
        assert np.any(f[0][still] != f[1][still]), "each frame has its own noise"
    assert {c.kind for c in split} == {0, 1, 2}


def test_write_cli(tmp_path):
    out = tmp_path / "clips"
    assert C.main(["write", str(out), "--n", "3", "--seed", "1"]) == 0
    meta = json.loads((out / "labels.json").read_text())
    assert meta["classes"] == C.CLASSES
    assert meta["clips"] == [{"dir": f"clip_{i:04d}", "label": C.CLASSES[i], "class": i, "frames": C.FRAMES} for i in range(3)]
    from PIL import Image

    for i in range(3):
        names = sorted(os.listdir(out / f"clip_{i:04d}"))
        assert names == [f"frame_{t:03d}.png" for t in range(C.FRAMES)]
        got = np.stack([np.asarray(Image.open(out / f"clip_{i:04d}" / n)) for n in names])
        np.testing.assert_array_equal(got, C.clip(1, i).frames)
