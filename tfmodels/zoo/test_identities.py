"""Tests for the generated identity set (identities.py): determinism, the splits, that images
of one identity resemble each other more than other identities', the files the Go end-to-end
tests read, and the NumPy reference decisions (identify, online_clusters) on hand-made points.

    .venv/bin/python -m pytest -q tfmodels/zoo/test_identities.py
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image

from tfmodels.zoo import identities as I


def test_determinism_and_streams():
    a = I.image(1003, 7, I.PROBE_SEED)
    assert a.dtype == np.uint8 and a.shape == (I.SIZE, I.SIZE, 3)
    np.testing.assert_array_equal(a, I.image(1003, 7, I.PROBE_SEED))
    assert not np.array_equal(a, I.image(1003, 8, I.PROBE_SEED)), "another image index"
    assert not np.array_equal(a, I.image(1003, 7, I.GALLERY_SEED)), "gallery and probe images differ"
    assert not np.array_equal(a, I.image(1004, 7, I.PROBE_SEED)), "another identity"
    imgs, ids = I.generate([5, 1001], 3, I.TRAIN_SEED)
    assert imgs.shape == (6, I.SIZE, I.SIZE, 3) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [5, 5, 5, 1001, 1001, 1001])
    np.testing.assert_array_equal(imgs[4], I.image(1001, 1, I.TRAIN_SEED))
    again, _ = I.generate([1001], 2, I.TRAIN_SEED, first=1)
    np.testing.assert_array_equal(again, imgs[4:6])


def test_splits_are_disjoint():
    train, held, dis = set(I.TRAIN_IDS), set(I.HELDOUT_IDS), set(I.DISTRACTOR_IDS)
    assert len(train) == 1000 and len(held) == 20 and len(dis) == 10
    assert not (train & held) and not (train & dis) and not (held & dis)
    assert len({I.TRAIN_SEED, I.GALLERY_SEED, I.PROBE_SEED}) == 3


def test_pattern_is_a_function_of_the_identity():
    p = I.pattern(1003)
    assert p == I.pattern(1003) and p != I.pattern(1004)
    assert len(p.parts) == 4
    left, right = p.parts[0], p.parts[1]
    assert (left.x, left.y, left.size, left.color) == (-right.x, right.y, right.size, right.color), "mirrored eyes"
    assert left.theta == -right.theta and left.x < 0 and left.y < 0
    # no two identities of the splits look the same
    ids = list(I.TRAIN_IDS) + list(I.HELDOUT_IDS) + list(I.DISTRACTOR_IDS)
    assert len({I.canonical(k).tobytes() for k in ids}) == len(ids)
    c = I.canonical(1003)
    # the corners are background grey; the head's colour covers the most pixels of the rest
    assert (c[0, 0] == 128).all() and (c[-1, -1] == 128).all()
    colours, counts = np.unique(c.reshape(-1, 3), axis=0, return_counts=True)
    order = np.argsort(-counts)
    np.testing.assert_array_equal(colours[order[1]], np.rint(p.head_color).astype(np.uint8))
    assert counts[order[1]] > 0.5 * np.pi * (I.HEAD * I.SIZE) ** 2


def _feature(img: np.ndarray) -> np.ndarray:
    """A crude nuisance-tolerant descriptor: the colour histogram (4 bins a channel) of the
    central 24x24 pixels, mostly inside the head at any pose, after standardising each channel
    (which undoes brightness, contrast and the colour cast)."""
    c = img[20:44, 20:44].reshape(-1, 3).astype(np.float64)
    c = (c - c.mean(axis=0)) / (c.std(axis=0) + 1e-6)
    h, _ = np.histogramdd(c, bins=4, range=[(-2.5, 2.5)] * 3)
    return h.ravel() / len(c)


def test_images_of_one_identity_resemble_each_other():
    ids = list(I.HELDOUT_IDS)[:10]
    imgs, labels = I.generate(ids, 8, I.PROBE_SEED)
    f = np.stack([_feature(x) for x in imgs])
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(f), dtype=bool)
    assert d[same & off].mean() < 0.7 * d[~same].mean()  # 0.50 measured
    np.fill_diagonal(d, np.inf)
    nn_acc = np.mean(labels[np.argmin(d, axis=1)] == labels)
    assert nn_acc > 0.6, f"1-NN accuracy {nn_acc} (chance 0.1; 0.76 measured)"
    # and no two images of an identity are alike
    assert len({x.tobytes() for x in imgs}) == len(imgs)


def test_nuisance_changes_pose_and_lighting():
    imgs, _ = I.generate([1000], 20, I.PROBE_SEED)
    # the head's centre of mass moves (shift) and the mean brightness changes (lighting, background)
    means = imgs.reshape(20, -1).mean(axis=1)
    assert means.std() > 10
    head = np.asarray(I.pattern(1000).head_color)
    centres = []
    for x in imgs:
        close = np.linalg.norm(x.astype(float) - head, axis=-1) < 60
        ys, xs = np.nonzero(close)
        centres.append((xs.mean(), ys.mean()))
    assert np.ptp(np.asarray(centres), axis=0).max() > 4


def test_probe_order_is_a_fixed_permutation():
    o = I.probe_order(600)
    np.testing.assert_array_equal(np.sort(o), np.arange(600))
    np.testing.assert_array_equal(o, I.probe_order(600))
    assert not np.array_equal(o, np.arange(600))


def test_parse_ids():
    assert I.parse_ids("1000-1003,1010") == [1000, 1001, 1002, 1003, 1010]
    assert I.parse_ids("7") == [7]


def test_write_gallery_and_probes(tmp_path):
    g = tmp_path / "gallery"
    I.main(["gallery", str(g), "--ids", "1000-1001", "--per-id", "2"])
    assert sorted(os.listdir(g)) == ["id1000", "id1001"]
    assert sorted(os.listdir(g / "id1001")) == ["000.png", "001.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(g / "id1001" / "001.png")),
                                  I.image(1001, 1, I.GALLERY_SEED))
    p = tmp_path / "probes"
    I.main(["probes", str(p), "--ids", "1000,1020", "--per-id", "3"])
    with open(p / "labels.json") as f:
        files = json.load(f)["files"]
    imgs, labels = I.generate([1000, 1020], 3, I.PROBE_SEED)
    order = I.probe_order(6)
    assert [e["image"] for e in files] == [f"{n:04d}.png" for n in range(6)]
    assert [e["identity"] for e in files] == [I.name(labels[j]) for j in order]
    for e, j in zip(files, order):
        np.testing.assert_array_equal(np.asarray(Image.open(p / e["image"])), imgs[j])


# ------------------------------------------------------------------ reference decisions


def test_identify_nearest_gallery_and_unknown():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    gids = [7, 9, 9]
    probes = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [0.0, -1.0]])
    ids, dist = I.identify(probes, gallery, gids, 1.0)
    # probe 1 at 53 degrees: nearest is the 45-degree row of identity 9; probes 2 and 3 are
    # nearest to 9's and 7's first rows, sqrt(2) away: beyond the threshold, unknown
    np.testing.assert_array_equal(ids, [7, 9, -1, -1])
    np.testing.assert_allclose(dist[:3], [0.0, 2 * math.sin(math.radians(53.13 - 45) / 2), math.sqrt(2)], atol=1e-4)
    ids, _ = I.identify(probes, gallery, gids, np.inf)
    np.testing.assert_array_equal(ids, [7, 9, 9, 7])


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_online_clusters_hand_computed():
    pts = np.array([_unit(0), _unit(90), _unit(20), _unit(38), _unit(-90)])
    # 0 deg opens 1; 90 deg is sqrt(2) away -> opens 2; 20 deg is 2 sin(10) = 0.347 from cluster 1 ->
    # joins it, its centroid moves to 10 deg; 38 deg is 2 sin(14) = 0.484 from 10 deg (but 0.651 from
    # the first point): joins 1 only because the centroid moved; -90 deg opens 3
    np.testing.assert_array_equal(I.online_clusters(pts, 0.5), [1, 2, 1, 1, 3])
    # at 0.45 the 38-degree point is too far and opens its own cluster
    np.testing.assert_array_equal(I.online_clusters(pts, 0.45), [1, 2, 1, 3, 4])
    # the order matters (online, not a batch clustering): 38 deg first opens 2, and 20 deg then
    # joins it, 2 sin(9) = 0.313 from 38 deg against 0.347 from 0 deg
    np.testing.assert_array_equal(I.online_clusters(pts[[0, 3, 2]], 0.5), [1, 2, 2])


def test_online_clusters_ties_boundary_and_empty():
    # a point equidistant from clusters 1 and 2 joins the lower id; a distance equal to the threshold joins
    pts = np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    np.testing.assert_array_equal(I.online_clusters(pts, 1.5), [1, 2, 1])
    np.testing.assert_array_equal(I.online_clusters(np.array([[1.0, 0.0], [1.0, 1.0]]), 1.0), [1, 1])
    assert I.online_clusters(np.zeros((0, 2)), 1.0).shape == (0,)


def test_online_clusters_centroid_is_the_normalised_sum():
    # [1, 0] and [0, 1] (sqrt(2) apart) form cluster 1: centroid [1, 1] / sqrt(2), not the mean
    # [0.5, 0.5] nor the sum [1, 1]. [1.6, 1.6] is 1.26 from it (1.56 from the mean) and
    # [-0.2, -0.2] 1.28 (1.70 from the sum): both join cluster 1 at threshold 1.5
    for q in ([1.6, 1.6], [-0.2, -0.2]):
        np.testing.assert_array_equal(I.online_clusters(np.array([[1.0, 0.0], [0.0, 1.0], q]), 1.5), [1, 1, 1])
    np.testing.assert_array_equal(I.online_clusters(np.array([[1.0, 0.0], [0.0, 1.0], [1.6, 1.6]]), 1.2), [1, 2, 3])
