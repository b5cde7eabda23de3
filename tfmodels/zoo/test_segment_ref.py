"""Tests of the numpy segmentation reference (segment_ref.py).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_segment_ref.py

Every expected number is worked out by hand (comments show the arithmetic);
the bilinear resize is also checked against tf.image.resize.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tfmodels.zoo import segment_ref as R

NAN, INF = float("nan"), float("inf")


def raw(rows):
    """[h][w][n] nested lists -> [1, h, w, n] float32."""
    return np.asarray(rows, np.float32)[None]


def cmap(raw_, W, H, softmax=False, **o):
    opts = dict(R.DEFAULT_OPTIONS)
    opts.update(o)
    m, _ = R.class_map(raw_, W, H, softmax, opts)
    return m.tolist()


# ------------------------------------------------------------------ resizing


def test_nearest_index_takes_the_model_pixel_under_the_frame_pixel_centre():
    # 2 model pixels over 5 frame pixels: centres (x + .5) * 2 / 5 = .2 .6 1.0 1.4 1.8
    assert R.nearest_index(5, 2).tolist() == [0, 0, 1, 1, 1]
    # upsample 2 -> 4: .25 .75 1.25 1.75
    assert R.nearest_index(4, 2).tolist() == [0, 0, 1, 1]
    # downsample 4 -> 2: 1.0, 3.0 (a centre on a boundary belongs to the right pixel)
    assert R.nearest_index(2, 4).tolist() == [1, 3]
    # 3 -> 7: (x + .5) * 3 / 7 = .214 .643 1.071 1.5 1.929 2.357 2.786
    assert R.nearest_index(7, 3).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert R.nearest_index(9, 1).tolist() == [0] * 9
    assert R.nearest_index(1, 5).tolist() == [2]  # centre .5 * 5 = 2.5


def test_bilinear_axis_has_half_pixel_centres_clamped_to_the_edges():
    # 2 -> 4: u = (x + .5) / 2 - .5 = -.25 .25 .75 1.25
    lo, hi, f = R.bilinear_axis(4, 2)
    assert lo.tolist() == [0, 0, 0, 1]
    assert hi.tolist() == [0, 1, 1, 1]
    assert f.tolist() == [0.75, 0.25, 0.75, 0.25]
    # values 0, 4 -> 0 (clamped), 1, 3, 4 (clamped)
    v = np.array([[[0.0], [4.0]]])  # [1, 2, 1]
    assert R.resize_bilinear(v, 4, 1)[0, :, 0].tolist() == [0.0, 1.0, 3.0, 4.0]


def test_bilinear_resize_is_tf_image_resize():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    for (h, w, n), (H, W) in [((5, 7, 3), (13, 9)), ((8, 8, 2), (3, 5)), ((1, 1, 4), (6, 2)), ((4, 3, 1), (17, 31))]:
        v = rng.normal(size=(h, w, n)).astype(np.float32)
        want = tf.image.resize(v[None], (H, W), method="bilinear", antialias=False).numpy()[0]
        got = R.resize_bilinear(v.astype(np.float64), W, H)
        assert np.max(np.abs(got - want)) < 1e-5


# ----------------------------------------------------------------- class map


def test_multi_class_nearest_is_the_argmax_of_the_model_pixel():
    # model 2 x 2, 3 classes; argmax per model pixel: [[2, 0], [1, 1]]
    r = raw([[[0, 1, 5], [3, 2, 1]],
             [[0, 4, 1], [-1, 0, -2]]])
    # frame 4 x 3: columns [0, 0, 1, 1], rows (y + .5) * 2 / 3 = .33 1.0 1.67 -> [0, 1, 1]
    assert cmap(r, 4, 3) == [[2, 2, 0, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1]]


def test_bilinear_interpolates_the_logits_before_the_argmax():
    # left pixel logits (2, 0), right (0, 1). Frame 8 wide: u = (x + .5) / 4 - .5 =
    # -.375 -.125 .125 .375 .625 .875 1.125 1.375; class 0 = 2 (1 - f), class 1 = f:
    # class 1 where f > 2/3, i.e. f = .875 and the clamped right edge.
    r = raw([[[2, 0], [0, 1]]])
    assert cmap(r, 8, 1, resize="bilinear") == [[0, 0, 0, 0, 0, 1, 1, 1]]
    assert cmap(r, 8, 1, resize="nearest") == [[0, 0, 0, 0, 1, 1, 1, 1]]


def test_ties_go_to_the_lowest_class():
    r = raw([[[1, 3, 3], [2, 2, 2]]])
    assert cmap(r, 2, 1) == [[1, 0]]
    assert cmap(r, 2, 1, resize="bilinear") == [[1, 0]]  # f = .25: (1.25, 2.75, 2.75)


def test_nan_is_the_lowest_value_and_inf_is_clamped():
    r = raw([[[NAN, -5], [NAN, NAN], [1, INF], [INF, INF], [-INF, NAN]]])
    m, nan = R.class_map(r, 5, 1, False, dict(R.DEFAULT_OPTIONS))
    assert m.tolist() == [[1, 0, 1, 0, 0]]
    assert nan == 4
    # bilinear between a NaN and a finite logit stays finite: at u = .25 between
    # pixel 0 (NaN, -5) and pixel 1 (NaN, NaN) both classes are ~ -FLT_MAX, class 1
    # higher (-5 * .75 - FLT_MAX * .25 > -FLT_MAX)
    v = R.resize_bilinear(R.sanitize(r[0]), 10, 1)
    assert np.all(np.isfinite(v))
    out, _ = R.segment(r, 5, 1, ["a", "b"], False)
    assert out["nan_values"] == 4
    assert [(e["label"], e["pixels"]) for e in out["classes"]] == [("a", 3), ("b", 2)]


def test_single_channel_probabilities_threshold_at_or_above():
    r = raw([[[0.2], [0.75]], [[0.5], [0.49]]])
    assert cmap(r, 2, 2) == [[0, 1], [1, 0]]
    assert cmap(r, 2, 2, threshold=0.75) == [[0, 1], [0, 0]]
    # the float32 value is compared as it is: float32(0.7) = 0.69999998... < 0.7
    assert cmap(raw([[[0.7]]]), 1, 1, threshold=0.7) == [[0]]
    # logits (softmax = true): sigmoid(0) = .5, sigmoid(-.01) < .5, sigmoid(ln 3) = .75
    lg = raw([[[-1], [math.log(3)]], [[0], [-0.01]]])
    assert cmap(lg, 2, 2, softmax=True) == [[0, 1], [1, 0]]
    assert cmap(lg, 2, 2, softmax=True, threshold=0.8) == [[0, 0], [0, 0]]


def test_single_channel_bilinear_thresholds_the_interpolated_value():
    # values 0, 1 over a 4-wide frame: [0, .25, .75, 1]
    r = raw([[[0.0], [1.0]]])
    assert cmap(r, 4, 1, resize="bilinear") == [[0, 0, 1, 1]]
    assert cmap(r, 4, 1, resize="bilinear", threshold=0.8) == [[0, 0, 0, 1]]
    assert cmap(r, 4, 1, resize="nearest", threshold=0.8) == [[0, 0, 1, 1]]
    # NaN never becomes foreground, and drags its bilinear neighbourhood down:
    # at x = 2 (f = .75) the value is -FLT_MAX * .25 + .75
    assert cmap(raw([[[NAN], [1.0]]]), 4, 1, resize="bilinear", threshold=0.1) == [[0, 0, 0, 1]]
    assert cmap(raw([[[NAN], [1.0]]]), 4, 1, resize="nearest", threshold=0.1) == [[0, 0, 1, 1]]


def test_one_by_one_output_fills_the_frame():
    assert cmap(raw([[[0, 2, 1]]]), 5, 3) == [[1] * 5] * 3
    assert cmap(raw([[[0, 2, 1]]]), 5, 3, resize="bilinear") == [[1] * 5] * 3


# ------------------------------------------------------------------- regions


def test_rle_is_cocos():
    # 2 x 2 [[0, 1], [1, 1]], column-major 0 1 1 1: runs 1, 3 -> "13"
    m = np.array([[0, 1], [1, 1]], bool)
    assert R.rle(m) == {"size": [2, 2], "counts": "13"}
    # 1 x 3 all on: runs 0, 3 -> "03"
    assert R.rle(np.ones((1, 3), bool))["counts"] == "03"


def test_connectivity_counts_diagonal_neighbours_only_with_8():
    m = np.array([[1, 0, 0],
                  [0, 1, 0],
                  [0, 0, 0]], bool)
    assert R.region(m, 0, 4)[1] == 2
    assert R.region(m, 0, 8)[1] == 1


def test_shares_boxes_components_min_area_ignore_and_alerts():
    # frame 4 x 4 (nearest, model = frame):
    #   0 0 1 1
    #   0 2 1 1
    #   0 0 0 0
    #   2 0 0 2
    cls = np.array([[0, 0, 1, 1], [0, 2, 1, 1], [0, 0, 0, 0], [2, 0, 0, 2]])
    r = np.eye(3, dtype=np.float32)[cls][None]  # one-hot logits
    labels = ["bg", "water", "boat"]
    out, m = R.segment(r, 4, 4, labels, True)
    assert m.tolist() == cls.tolist()
    e = {x["label"]: x for x in out["classes"]}
    # bg: 9 pixels, one 8-connected component (the 4-connected one too)
    assert (e["bg"]["pixels"], e["bg"]["share"], e["bg"]["components"]) == (9, 9 / 16, 1)
    assert e["bg"]["box"] == {"x1": 0, "y1": 0, "x2": 4, "y2": 4}
    assert e["water"]["box"] == {"x1": 2, "y1": 0, "x2": 4, "y2": 2}
    assert (e["water"]["pixels"], e["water"]["components"]) == (4, 1)
    # boat: three single pixels, (1,1), (3,0) and (3,3); none touch
    assert (e["boat"]["pixels"], e["boat"]["components"]) == (3, 3)
    assert e["boat"]["box"] == {"x1": 0, "y1": 1, "x2": 4, "y2": 4}
    # water's mask column-major: col 0 [0000], col 1 [0000], col 2 [1100], col 3 [1100]
    # -> runs 8, 2, 2, 2, 2; from the 4th on less the run two before: 8 2 2 0 0
    assert e["water"]["mask"] == {"size": [4, 4], "counts": "82200"}

    # min_area 2 (per component): the boat pixels go, bg and water stay
    out, _ = R.segment(r, 4, 4, labels, True, {"min_area": 2})
    assert [x["label"] for x in out["classes"]] == ["bg", "water"]
    # min_area 5: water (one component of 4) goes too
    out, _ = R.segment(r, 4, 4, labels, True, {"min_area": 5})
    assert [x["label"] for x in out["classes"]] == ["bg"]

    # ignore bg; alerts at or above the threshold only
    out, _ = R.segment(r, 4, 4, labels, True, {"ignore_classes": ["bg"], "alerts": {"water": 0.25, "boat": 0.2, "bg": 0.1}})
    assert [x["label"] for x in out["classes"]] == ["water", "boat"]
    assert out["alerts"] == [{"label": "water", "share": 0.25, "threshold": 0.25}]
    assert (out["width"], out["height"]) == (4, 4)
    assert "nan_values" not in out


def test_min_area_drops_small_components_within_a_class():
    # class 1: a 3-pixel bar and a lone pixel (4-connectivity: 2 components)
    cls = np.array([[1, 1, 1, 0],
                    [0, 0, 0, 0],
                    [0, 0, 0, 1]])
    r = np.eye(2, dtype=np.float32)[cls][None]
    out, _ = R.segment(r, 4, 3, ["bg", "x"], False, {"min_area": 2, "connectivity": 4})
    x = [e for e in out["classes"] if e["label"] == "x"][0]
    assert (x["pixels"], x["components"], x["share"]) == (3, 1, 3 / 12)
    assert x["box"] == {"x1": 0, "y1": 0, "x2": 3, "y2": 1}
    from pycocotools import mask as M
    dec = M.decode({"size": x["mask"]["size"], "counts": x["mask"]["counts"].encode()})
    assert dec.tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_single_channel_publishes_the_foreground_under_the_one_label():
    r = raw([[[0.9], [0.1]], [[0.1], [0.8]]])
    out, m = R.segment(r, 2, 2, ["person"], False, {"connectivity": 4})
    assert m.tolist() == [[1, 0], [0, 1]]
    assert len(out["classes"]) == 1
    p = out["classes"][0]
    assert (p["label"], p["class"], p["pixels"], p["components"], p["share"]) == ("person", 0, 2, 2, 0.5)
    out, _ = R.segment(r, 2, 2, ["person"], False, {"threshold": 0.95})
    assert out["classes"] == []


def test_classes_without_pixels_are_left_out_and_masks_can_be_omitted():
    r = raw([[[5, 0, 0]]])
    out, _ = R.segment(r, 3, 2, ["a", "b", "c"], True, {"masks": False})
    assert [(e["label"], e["pixels"], e["share"]) for e in out["classes"]] == [("a", 6, 1.0)]
    assert "mask" not in out["classes"][0]
    with pytest.raises(ValueError):
        R.segment(r, 3, 2, ["a", "b"], True)
