"""Tests for the generated segmentation set (segshapes.py).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_segshapes.py
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from tfmodels.zoo import segshapes as S

N, SIZE = 200, S.SIZE


@pytest.fixture(scope="module", params=[S.TRAIN_SEED, S.HELDOUT_SEED], ids=["train", "heldout"])
def split(request):
    return S.generate(N, SIZE, request.param)


def test_classes():
    assert S.CLASSES == ["background", "circle", "square", "triangle", "dot"]
    assert S.CLASSES[S.BACKGROUND] == "background" and S.CLASSES[S.DOT] == "dot"


def test_determinism_and_prefix():
    a_img, a_lab = S.generate(12, SIZE, 1)
    b_img, b_lab = S.generate(12, SIZE, 1)
    c_img, c_lab = S.generate(5, SIZE, 1)
    assert a_img.dtype == np.uint8 and a_img.shape == (12, SIZE, SIZE, 3)
    assert a_lab.dtype == np.uint8 and a_lab.shape == (12, SIZE, SIZE)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    np.testing.assert_array_equal(a_img[:5], c_img)
    np.testing.assert_array_equal(a_lab[:5], c_lab)
    d_img, d_lab = S.generate(12, SIZE, 0)
    assert not np.array_equal(a_img, d_img) and not np.array_equal(a_lab, d_lab), "train and held-out differ"


def test_other_size():
    img, lab = S.generate(3, 64, 0)
    assert img.shape == (3, 64, 64, 3) and lab.shape == (3, 64, 64)


def test_class_frequencies(split):
    _, labels = split
    assert labels.max() < len(S.CLASSES)
    f = S.frequencies(labels)
    assert f.shape == (5,) and abs(f.sum() - 1) < 1e-12
    assert (f > 0).all(), "every class occurs"
    # background dominates; the dot is the rarest class by far (real class imbalance)
    assert f[0] > 0.75
    assert f[S.DOT] == f[1:].min()
    assert f[S.DOT] < 0.4 * f[1:S.DOT].min()
    assert 0.002 < f[S.DOT] < 0.015
    # dots occur in most images, several shapes in many
    present = np.array([[np.any(l == c) for c in range(5)] for l in labels])
    assert 0.6 < present[:, S.DOT].mean() < 0.9
    assert (present[:, 1:4].sum(1) >= 2).mean() > 0.3


def test_dots_are_small_and_shapes_large(split):
    from scipy import ndimage

    _, labels = split
    dmax = S.DOT_MAX * SIZE
    big_min = S.BIG_MIN * SIZE
    for lab in labels[:100]:
        cc, k = ndimage.label(lab == S.DOT)
        for j in range(1, k + 1):
            ys, xs = np.nonzero(cc == j)
            # a single dot (or two touching ones) is never larger than the largest dot's disc
            assert ys.max() - ys.min() + 1 <= 2 * math.ceil(dmax) + 1
    # the smallest circle is well above the largest dot
    assert big_min > 1.5 * dmax


def test_occlusion_keeps_objects_visible():
    # every label map has at least one large shape and the noise covers the image
    img, lab = S.generate(40, SIZE, 0)
    for l in lab:
        assert np.isin(l, [1, 2, 3]).any()
    assert img.std() > 10


def test_write_dir_round_trip(tmp_path):
    from PIL import Image

    img, lab = S.generate(4, SIZE, S.HELDOUT_SEED)
    d = str(tmp_path / "seg")
    S.write_dir(d, img, lab)
    with open(os.path.join(d, "labels.json")) as f:
        meta = json.load(f)
    assert meta["classes"] == S.CLASSES
    assert meta["files"][0] == {"image": "0000.png", "labels": "0000_labels.png"}
    assert len(meta["files"]) == 4
    assert Image.open(os.path.join(d, "0001.png")).mode == "RGB"
    g = Image.open(os.path.join(d, "0001_labels.png"))
    assert g.mode == "L" and g.size == (SIZE, SIZE)
    img2, lab2 = S.read_dir(d)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
