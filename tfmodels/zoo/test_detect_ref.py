"""Tests of the numpy detection-decode reference (detect_ref.py).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_detect_ref.py

Every expected number here is computed by hand (comments show the arithmetic),
NMS is checked against a brute-force loop written straight from the spec, and
average_precision against a published toy example and pycocotools' COCOeval.
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from tfmodels.zoo import detect_ref as R

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75
LN4 = math.log(4.0)  # sigmoid(ln 4) = 0.8
LN2 = math.log(2.0)


def case(kind, output, labels, src=(16, 16), inp=(16, 16), resize="stretch", **options):
    return {
        "kind": kind,
        "source": {"width": src[0], "height": src[1]},
        "input": {"width": inp[0], "height": inp[1], "resize": resize},
        "labels": labels,
        "output": output,
        "options": options,
    }


def boxes_of(dets):
    return [d["box"] for d in dets]


# ------------------------------------------------------------------ basics


def test_round_half_away():
    assert [R.round_half_away(v) for v in (2.5, -2.5, 1.5, 0.5, -0.5, 2.4999, 57.6)] == [3, -3, 2, 1, -1, 2, 58]
    assert R.round_half_away(0.49999999999999994) == 0  # floor(x + 0.5) would give 1


def test_iou():
    assert R.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)  # 1 / (4 + 4 - 1)
    assert R.iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching: width 0
    assert R.iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)
    assert R.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate
    many = R.iou_one_to_many(np.array([0, 0, 2, 2.0]), np.array([[1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]], float))
    assert many.tolist() == [R.iou((0, 0, 2, 2), (1, 1, 3, 3)), 0.0, 1.0]


def test_transform_stretch():
    t = R.make_transform(640, 480, 96, 96, "stretch")
    assert (t.sx, t.sy, t.pad_x, t.pad_y) == (96 / 640, 96 / 480, 0, 0)
    assert t.to_source((48, 48, 96, 96)) == pytest.approx((320, 240, 640, 480))


def test_transform_letterbox():
    # 640x480 -> 96x96: s = min(0.15, 0.2) = 0.15, nw = 96, nh = 72, pad (0, 12)
    t = R.make_transform(640, 480, 96, 96, "letterbox")
    assert (t.pad_x, t.pad_y) == (0, 12)
    assert t.sx == pytest.approx(0.15) and t.sy == pytest.approx(0.15)
    assert t.to_source((48, 12, 96, 84)) == pytest.approx((320, 0, 640, 480))
    # 300x500 -> 96x96: s = 0.192, nw = round(57.6) = 58, nh = 96, padX = (96-58)//2 = 19
    t = R.make_transform(300, 500, 96, 96, "letterbox")
    assert (t.pad_x, t.pad_y, t.sx, t.sy) == (19, 0, 58 / 300, 96 / 500)
    assert t.to_source((19, 0, 19 + 58, 96)) == pytest.approx((0, 0, 300, 500))
    # halves round away from zero: 4x5 -> 2x6: s = 0.5, nh = round(2.5) = 3, padY = (6-3)//2 = 1
    t = R.make_transform(4, 5, 2, 6, "letterbox")
    assert (t.pad_x, t.pad_y, t.sx, t.sy) == (0, 1, 0.5, 0.6)
    # a 1000x1 strip: nh = round(0.096) = 0 -> clamped to 1, padY = 47
    t = R.make_transform(1000, 1, 96, 96, "letterbox")
    assert (t.pad_y, t.sy) == (47, 1.0)


def test_clip():
    t = R.make_transform(100, 50, 100, 50, "stretch")
    assert t.clip(np.array([[-5, -5, 200, 20.0]])).tolist() == [[0, 0, 100, 20]]
    assert t.clip(np.array([[150, 60, 170, 80.0]])).tolist() == [[100, 50, 100, 50]]


# -------------------------------------------------------------------- yolo


def yolo_grid(gh, gw, B, C, fill=-20.0):
    """A grid where every objectness logit is -20 (sigmoid ~ 2e-9: nothing passes)."""
    g = np.zeros((1, gh, gw, B * (5 + C)), np.float32)
    for b in range(B):
        g[..., b * (5 + C) + 4] = fill
    return g


def test_yolo_hand():
    C = 2
    g = yolo_grid(2, 2, 1, C)
    # cell cy=0, cx=1: sigmoid(0)=.5 -> bx = (0.5+1)*8 = 12, by = 0.5*8 = 4, bw = 10, bh = 20
    # -> (7, -6, 17, 14); obj .5, p = (.75, .5) -> scores (.375, .25) -> class 0, .375
    g[0, 0, 1] = [0, 0, 0, 0, 0, LN3, 0]
    # cell cy=1, cx=0: tx = ln3 -> bx = .75*8 = 6, by = 1.5*8 = 12, bw = 10*2 = 20, bh = 20
    # -> (-4, 2, 16, 22); obj .8, p = (.5, .75) -> (.4, .6) -> class 1, .6
    g[0, 1, 0] = [LN3, 0, LN2, 0, LN4, 0, LN3]
    out = {"grids": ["g"], "strides": [8], "anchors": [10, 20], "anchor_masks": [0]}
    c = R.decode_yolo({"g": g}, out, C, 0.25)
    assert c.order.tolist() == [1, 2]  # (cy=0,cx=1) is candidate 1, (cy=1,cx=0) is 2
    np.testing.assert_allclose(c.boxes, [[7, -6, 17, 14], [-4, 2, 16, 22]], atol=1e-12)
    assert c.classes.tolist() == [0, 1]
    np.testing.assert_allclose(c.scores, [0.375, 0.6], atol=1e-12)
    dets = R.detect(case("yolo", out, C), {"g": g})
    assert [d["class"] for d in dets] == [1, 0]
    np.testing.assert_allclose(boxes_of(dets), [[0, 2, 16, 16], [7, 0, 16, 14]], atol=1e-12)
    np.testing.assert_allclose([d["score"] for d in dets], [0.6, 0.375], atol=1e-12)


def test_yolo_threshold_ties_and_zero():
    C = 3
    g = yolo_grid(1, 1, 1, C)
    # obj .5, all p = .5 -> every score .25 exactly: kept at threshold .25 (not below), class 0 (tie)
    g[0, 0, 0] = [0, 0, 0, 0, 0, 0, 0, 0]
    c = R.decode_yolo({"g": g}, {"grids": ["g"], "strides": [1], "anchors": [1, 1], "anchor_masks": [0]}, C, 0.25)
    assert c.classes.tolist() == [0] and c.scores.tolist() == [0.25]
    # threshold .3: all three scores become 0 -> dropped
    c = R.decode_yolo({"g": g}, {"grids": ["g"], "strides": [1], "anchors": [1, 1], "anchor_masks": [0]}, C, 0.3)
    assert len(c) == 0
    # p = (.5, .75, .5), obj .5 -> (.25, .375, .25); at .3 only class 1 survives (ln 3 is float32 here)
    g[0, 0, 0, 6] = LN3
    c = R.decode_yolo({"g": g}, {"grids": ["g"], "strides": [1], "anchors": [1, 1], "anchor_masks": [0]}, C, 0.3)
    assert c.classes.tolist() == [1] and c.scores.tolist() == pytest.approx([0.375], abs=1e-8)


def test_yolo_grids_anchors_and_order():
    # two grids, B = 2: grid 0 uses anchors masks[0:2] = (2, 0), grid 1 masks[2:4] = (1, 3)
    C = 1
    anchors = [4, 4, 8, 8, 16, 16, 32, 32]
    out = {"grids": ["a", "b"], "strides": [4, 8], "anchors": anchors, "anchor_masks": [2, 0, 1, 3]}
    ga = yolo_grid(2, 2, 2, C)
    gb = yolo_grid(1, 1, 2, C)
    ga[0, 1, 1, 6:12] = [0, 0, 0, 0, 0, 0]  # cy=1,cx=1,b=1 -> anchor 0 (4x4), centre (6, 6)
    ga[0, 0, 0, 0:6] = [0, 0, 0, 0, 0, 0]  # cy=0,cx=0,b=0 -> anchor 2 (16x16), centre (2, 2)
    gb[0, 0, 0, 6:12] = [0, 0, 0, 0, 0, 0]  # b=1 -> anchor 3 (32x32), centre (4, 4)
    c = R.decode_yolo({"a": ga, "b": gb}, out, C, 0.25)
    # order: grid a has 2*2*2 = 8 candidates ((cy, cx, b) row-major), grid b starts at 8
    assert c.order.tolist() == [0, 7, 9]
    np.testing.assert_allclose(c.boxes, [[-6, -6, 10, 10], [4, 4, 8, 8], [-12, -12, 20, 20]])


def test_yolo_nan_inf():
    C = 2
    g = yolo_grid(1, 4, 1, C)
    g[0, 0, 0] = [np.nan, 0, 0, 0, 0, 5, 0]  # NaN box -> dropped (a)
    g[0, 0, 1] = [0, 0, np.inf, 0, 0, 5, 0]  # bw = inf -> dropped (a)
    g[0, 0, 2] = [np.inf, 0, 0, 0, np.inf, 5, 0]  # sigmoid(inf) = 1: finite box, obj 1 -> kept
    g[0, 0, 3] = [0, 0, 0, 0, 0, 5, np.nan]  # a NaN class logit: score NaN -> dropped
    out = {"grids": ["g"], "strides": [10], "anchors": [4, 4], "anchor_masks": [0]}
    dets = R.detect(case("yolo", out, C, src=(40, 10), inp=(40, 10)), {"g": g})
    assert len(dets) == 1
    # cx = 2: bx = (1 + 2)*10 = 30, bw = 4 -> (28, 3, 32, 7); score = 1 * sigmoid(5)
    np.testing.assert_allclose(dets[0]["box"], [28, 3, 32, 7])
    assert dets[0]["score"] == pytest.approx(1 / (1 + math.exp(-5)))


def brute_yolo(tensors, out, C, thr):
    """The YOLO decode of the spec, one cell and anchor at a time."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    B = len(out["anchor_masks"]) // len(out["grids"])
    cands, n = [], 0
    for gi, key in enumerate(out["grids"]):
        g = tensors[key][0].astype(np.float64)
        s = out["strides"][gi]
        for cy in range(g.shape[0]):
            for cx in range(g.shape[1]):
                for b in range(B):
                    a = out["anchor_masks"][gi * B + b]
                    aw, ah = out["anchors"][2 * a], out["anchors"][2 * a + 1]
                    v = g[cy, cx, b * (5 + C) : (b + 1) * (5 + C)]
                    bx, by = (sig(v[0]) + cx) * s, (sig(v[1]) + cy) * s
                    bw, bh = aw * math.exp(v[2]), ah * math.exp(v[3])
                    sc = [sig(v[4]) * sig(c) for c in v[5:]]
                    sc = [x if x >= thr else 0.0 for x in sc]
                    k = max(range(C), key=lambda j: (sc[j], -j))
                    if sc[k] > 0:
                        cands.append((n, k, sc[k], (bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2)))
                    n += 1
    return cands


@pytest.mark.parametrize("seed", range(4))
def test_yolo_vs_loop(seed):
    rng = np.random.default_rng(seed)
    C, B = 3, 2
    out = {"grids": ["p", "q"], "strides": [8, 16], "anchors": rng.uniform(2, 30, 8).round(1).tolist(),
           "anchor_masks": [3, 1, 0, 2]}
    t = {"p": rng.normal(0, 2, (1, 4, 6, B * (5 + C))).astype(np.float32),
         "q": rng.normal(0, 2, (1, 2, 3, B * (5 + C))).astype(np.float32)}
    c = R.decode_yolo(t, out, C, 0.3)
    want = brute_yolo(t, out, C, 0.3)
    assert c.order.tolist() == [w[0] for w in want]
    assert c.classes.tolist() == [w[1] for w in want]
    np.testing.assert_allclose(c.scores, [w[2] for w in want], rtol=1e-12)
    np.testing.assert_allclose(c.boxes, np.array([w[3] for w in want]).reshape(-1, 4), rtol=1e-12)


@pytest.mark.parametrize("seed", range(30))
def test_letterbox_content_maps_to_frame(seed):
    rng = np.random.default_rng(seed)
    W, H, w, h = (int(v) for v in rng.integers(1, 2000, 4))
    for mode in ("letterbox", "stretch"):
        t = R.make_transform(W, H, w, h, mode)
        nw, nh = round(W * t.sx), round(H * t.sy)
        assert 1 <= nw <= w and 1 <= nh <= h
        if mode == "letterbox":
            assert nw == w or nh == h or nw == 1 or nh == 1
            assert (t.pad_x, t.pad_y) == ((w - nw) // 2, (h - nh) // 2)
        np.testing.assert_allclose(t.to_source((t.pad_x, t.pad_y, t.pad_x + nw, t.pad_y + nh)), (0, 0, W, H),
                                   rtol=1e-12, atol=1e-9)


# ------------------------------------------------------------------- odapi


ODAPI_OUT = {"boxes": "b", "scores": "s", "classes": "c", "num_detections": "n", "label_offset": 1}


def odapi_tensors(boxes, scores, classes, n):
    return {
        "b": np.asarray([boxes], np.float32),
        "s": np.asarray([scores], np.float32),
        "c": np.asarray([classes], np.float32),
        "n": np.asarray([n], np.float32),
    }


def test_odapi_hand():
    # input 200x100: (ymin, xmin, ymax, xmax) = (.1, .2, .5, .6) -> (.2*200, .1*100, .6*200, .5*100) = (40, 10, 120, 50)
    box = [0.125, 0.25, 0.5, 0.625]  # exact in float32 -> (50, 12.5, 125, 50)
    t = odapi_tensors(
        [box, box, box, box, box, box, box],
        [0.9, 0.8, 0.7, 0.6, 0.2, 0.5, 0.99],
        [1.0, 1.0, 0.0, 4.0, 1.0, 2.5, 1.0],
        6.9,  # int(6.9) = 6: the last row is not read
    )
    dets = R.detect(case("odapi", ODAPI_OUT, 3, src=(200, 100), inp=(200, 100)), t)
    # row 0: class 0; row 1: class 0 (no NMS for odapi); row 2: class -1 dropped; row 3: class 3 >= C dropped;
    # row 4: score .2 < .25 dropped; row 5: round(2.5) = 3 -> class 2
    assert [(d["class"], round(d["score"], 6)) for d in dets] == [(0, 0.9), (0, 0.8), (2, 0.5)]
    assert boxes_of(dets) == [[50, 12.5, 125, 50]] * 3


def test_odapi_source_mapping_and_order():
    # stretch 128x128 -> source 256x64: x * 2, y / 2
    t = odapi_tensors([[0.25, 0.5, 0.75, 1.0], [0, 0, 0.5, 0.5]], [0.5, 0.5], [2.0, 1.0], 2)
    dets = R.detect(case("odapi", ODAPI_OUT, 3, src=(256, 64), inp=(128, 128)), t)
    # equal scores: class 0 (row 1) first, then class 1
    assert [d["class"] for d in dets] == [0, 1]
    assert boxes_of(dets) == [[0, 0, 128, 32], [128, 16, 256, 48]]


def test_mask_paste_hand():
    m = np.array([[0.0, 1.0], [0.0, 1.0]])
    # box (0,0,4,4) in a 4x4 frame: u = (x+.5)/4*2 - .5 = -.25, .25, .75, 1.25
    # -> samples 0 (clamped), .25, .75, 1 (clamped) -> columns 2, 3 on
    bm = R.paste_mask(m, (0, 0, 4, 4), 4, 4, 0.5)
    assert bm.tolist() == [[0, 0, 1, 1]] * 4
    # the unclipped box (-2, 0, 2, 4): only x = 0, 1 have centres inside; u = .75, 1.25 -> .75, 1 -> both on
    bm = R.paste_mask(m, (-2, 0, 2, 4), 4, 4, 0.5)
    assert bm.tolist() == [[1, 1, 0, 0]] * 4
    # centre exactly on X1 is inside, on X2 outside: box (0.5, 0, 2.5, 4) -> x = 0, 1 (centres .5, 1.5)
    bm = R.paste_mask(np.ones((2, 2)), (0.5, 0, 2.5, 4), 4, 4, 0.5)
    assert bm.tolist() == [[1, 1, 0, 0]] * 4
    # bilinear along both axes: 2x2 [[0, 1], [1, 1]] over an 8x8 box, pixel (2, 2): u = v = 2.5/8*2 - .5 = .125
    m = np.array([[0.0, 1.0], [1.0, 1.0]])
    s = R.bilinear_sample(m, np.array([0.125]), np.array([0.125]))
    # top = 0*.875 + 1*.125 = .125; bottom = 1; .125*.875 + 1*.125 = .234375
    assert s.tolist() == [0.234375]


def brute_mask(m, box, W, H, thr):
    """The mask paste of the spec, one pixel at a time."""
    X1, Y1, X2, Y2 = box
    mh, mw = m.shape

    def idx(t, n):
        lo = math.floor(t)
        frac = t - lo
        hi = lo + 1
        if lo < 0:
            lo = hi = 0
            frac = 0.0
        if lo + 1 > n - 1:
            hi = n - 1
            if lo >= n - 1:
                lo, frac = n - 1, 0.0
        return lo, hi, frac

    out = np.zeros((H, W), np.uint8)
    for y in range(H):
        for x in range(W):
            if not (X1 <= x + 0.5 < X2 and Y1 <= y + 0.5 < Y2):
                continue
            u0, u1, fu = idx((x + 0.5 - X1) / (X2 - X1) * mw - 0.5, mw)
            v0, v1, fv = idx((y + 0.5 - Y1) / (Y2 - Y1) * mh - 0.5, mh)
            top = m[v0, u0] * (1 - fu) + m[v0, u1] * fu
            bot = m[v1, u0] * (1 - fu) + m[v1, u1] * fu
            out[y, x] = top * (1 - fv) + bot * fv >= thr
    return out


@pytest.mark.parametrize("seed", range(20))
def test_mask_paste_vs_loop(seed):
    rng = np.random.default_rng(seed)
    W, H = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    mh, mw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    m = rng.uniform(0, 1, (mh, mw))
    x1, y1 = rng.uniform(-20, 40, 2)
    box = (x1, y1, x1 + rng.uniform(0.1, 40), y1 + rng.uniform(0.1, 40))
    thr = float(rng.choice([0.3, 0.5, 0.7]))
    assert R.paste_mask(m, box, W, H, thr).tolist() == brute_mask(m, box, W, H, thr).tolist()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools 2.0.11 + numpy 2 (mask.decode)
def test_odapi_masks_rle():
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_util

    out = dict(ODAPI_OUT, masks="m")
    t = odapi_tensors([[0, 0, 1, 0.5]], [0.9], [1.0], 1)
    t["m"] = np.array([[[[0.0, 1.0], [0.0, 1.0]]]], np.float32)  # [1, N=1, 2, 2]
    # input 8x8 -> source 8x4 stretch: box (0, 0, 4, 8) in input -> (0, 0, 4, 4) in source
    dets = R.detect(case("odapi", out, 3, src=(8, 4), inp=(8, 8)), t)
    assert len(dets) == 1 and dets[0]["mask"]["size"] == [4, 8]
    bm = mask_util.decode({"size": [4, 8], "counts": dets[0]["mask"]["counts"].encode()})
    assert bm.tolist() == [[0, 0, 1, 1, 0, 0, 0, 0]] * 4


# -------------------------------------------------------------------- rows


def test_rows_formats_and_units():
    # input 200x100, the box (40, 10, 120, 50) in every format; a junk column 0 so box_column = 1
    forms = {
        ("xyxy", "pixels"): [40, 10, 120, 50],
        ("xyxy", "normalized"): [0.2, 0.1, 0.6, 0.5],
        ("yxyx", "pixels"): [10, 40, 50, 120],
        ("yxyx", "normalized"): [0.1, 0.2, 0.5, 0.6],
        ("cxcywh", "pixels"): [80, 30, 80, 40],
        ("cxcywh", "normalized"): [0.4, 0.3, 0.4, 0.4],
    }
    for (fmt, units), b in forms.items():
        d = np.array([[[7, *b, 0.75, 2]]], np.float64)
        out = {"detections": "d", "box_column": 1, "box_format": fmt, "box_units": units,
               "score_column": 5, "class_column": 6, "label_offset": 0, "nms": False}
        dets = R.detect(case("rows", out, 3, src=(200, 100), inp=(200, 100)), {"d": d})
        assert len(dets) == 1, (fmt, units)
        np.testing.assert_allclose(dets[0]["box"], [40, 10, 120, 50], atol=1e-9, err_msg=f"{fmt} {units}")
        assert (dets[0]["class"], dets[0]["score"]) == (2, 0.75)


def test_rows_drops_and_nms_flag():
    out = {"detections": "d", "box_column": 0, "box_format": "cxcywh", "box_units": "pixels",
           "score_column": 4, "class_column": 5, "label_offset": 0, "nms": False}
    d = np.array([[
        [50, 50, 20, 20, 0.9, 0],
        [51, 50, 20, 20, 0.8, 0],  # IoU with row 0: 19*20/(800-380) = 380/420 > .45
        [50, 50, -1, 20, 0.9, 0],  # negative width: x2 < x1 -> dropped (a)
        [50, 50, 0, 0, 0.9, 1],  # zero size: not inverted, but empty -> dropped (c)
        [50, 50, 20, 20, 0.9, 3],  # class 3 >= C
        [50, 50, 20, 20, 0.9, -1],  # class -1
        [50, 50, 20, 20, 0.1, 0],  # below threshold
    ]], np.float64)
    c = case("rows", out, 3, src=(100, 100), inp=(100, 100))
    dets = R.detect(c, {"d": d})
    assert [(x["class"], x["score"]) for x in dets] == [(0, 0.9), (0, 0.8)]
    out["nms"] = True
    dets = R.detect(c, {"d": d})
    assert [(x["class"], x["score"]) for x in dets] == [(0, 0.9)]


# -------------------------------------------------------------- anchorfree


def test_anchorfree_layouts_and_scores():
    C = 3
    # N = 4 candidates, channels (cx, cy, w, h, s0, s1, s2)
    rows = np.array([
        [10, 10, 4, 4, 0.1, 0.7, 0.3],  # class 1, .7
        [20, 20, 4, 4, 0.6, 0.6, 0.1],  # tie -> class 0, .6
        [30, 30, 4, 4, 0.2, 0.1, 0.24],  # max .24 < .25 -> dropped
        [40, 40, 4, 4, 0.9, np.nan, 0.1],  # NaN class score -> dropped
    ], np.float32)
    first = rows.T[None]  # [1, 4+C, N]
    last = rows[None]  # [1, N, 4+C]
    for layout, p in (("channels_first", first), ("channels_last", last)):
        out = {"predictions": "p", "layout": layout}
        dets = R.detect(case("anchorfree", out, C, src=(50, 50), inp=(50, 50)), {"p": p})
        assert [(d["class"], round(d["score"], 6)) for d in dets] == [(1, 0.7), (0, 0.6)], layout
        np.testing.assert_allclose(boxes_of(dets), [[8, 8, 12, 12], [18, 18, 22, 22]])
    # normalized units in a 100x50 input: cx .5 -> 50, w .1 -> 10, cy .5 -> 25, h .2 -> 10
    p = np.array([[[0.5, 0.5, 0.1, 0.2, 0.9]]], np.float32)
    out = {"predictions": "p", "layout": "channels_last", "box_units": "normalized"}
    dets = R.detect(case("anchorfree", out, 1, src=(100, 50), inp=(100, 50)), {"p": p})
    np.testing.assert_allclose(dets[0]["box"], [45, 20, 55, 30], atol=1e-6)


# ---------------------------------------------------------- postprocessing


ROWS_OUT = {"detections": "d", "box_column": 0, "box_format": "xyxy", "box_units": "pixels",
            "score_column": 4, "class_column": 5, "label_offset": 0, "nms": True}


def test_postprocess_options():
    d = np.array([[
        [0, 0, 10, 10, 0.9, 0],
        [1, 0, 11, 10, 0.8, 1],  # IoU with row 0: 90/110 = .818
        [50, 50, 52, 52, 0.7, 2],  # area 4
        [-100, -100, -90, -90, 0.6, 2],  # fully outside: clipped to (0,0,0,0), area 0
    ]], np.float64)
    t = {"d": d}
    c = case("rows", ROWS_OUT, 3, src=(100, 100), inp=(100, 100))
    assert [x["class"] for x in R.detect(c, t)] == [0, 1, 2]  # the box outside the frame is dropped
    c["options"] = {"class_agnostic": True}
    assert [x["class"] for x in R.detect(c, t)] == [0, 2]
    c["options"] = {"classes": [1, 2]}
    assert [x["class"] for x in R.detect(c, t)] == [1, 2]
    c["options"] = {"min_area": 4}  # area 4 is not < 4: kept
    assert [x["class"] for x in R.detect(c, t)] == [0, 1, 2]
    c["options"] = {"min_area": 4.5}
    assert [x["class"] for x in R.detect(c, t)] == [0, 1]
    c["options"] = {"max_detections": 1}
    assert [x["class"] for x in R.detect(c, t)] == [0]
    c["options"] = {"nms_threshold": 0.9}
    assert [x["class"] for x in R.detect(c, t)] == [0, 1, 2]
    # class filter before NMS: with class 0 filtered out, agnostic NMS no longer removes class 1
    c["options"] = {"class_agnostic": True, "classes": [1]}
    assert [x["class"] for x in R.detect(c, t)] == [1]


def test_postprocess_nan_inf_and_letterbox():
    d = np.array([[
        [np.nan, 0, 10, 10, 0.9, 0],
        [0, 0, np.inf, 10, 0.9, 0],
        [0, 0, 10, 10, np.inf, 0],
        [0, 0, 10, 10, np.nan, 0],
        [0, 0, 10, 10, 0.5, np.nan],  # class NaN: out of range
        [19, 12, 96, 84, 0.5, 0],
    ]], np.float64)
    # letterbox 640x480 -> 96x96 (pad (0, 12), s = .15): (19, 12, 96, 84) -> (126.67, 0, 640, 480)
    c = case("rows", ROWS_OUT, 3, src=(640, 480), inp=(96, 96), resize="letterbox")
    dets = R.detect(c, {"d": d})
    assert len(dets) == 1
    np.testing.assert_allclose(dets[0]["box"], [19 / 0.15, 0, 640, 480])


def test_sort_ties_class_then_order():
    d = np.array([[
        [0, 0, 1, 1, 0.5, 2],
        [10, 0, 11, 1, 0.5, 1],
        [20, 0, 21, 1, 0.5, 1],
        [30, 0, 31, 1, 0.6, 2],
    ]], np.float64)
    for nms in (True, False):
        c = case("rows", dict(ROWS_OUT, nms=nms), 3, src=(100, 100), inp=(100, 100))
        assert [x["box"][0] for x in R.detect(c, {"d": d})] == [30, 10, 20, 0]


def brute_nms(boxes, scores, classes, thr, agnostic):
    """The spec, literally: sort; keep a box unless a kept one (same class unless
    agnostic) overlaps it with IoU > thr."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], classes[i], i))
    kept = []
    for i in order:
        if all(not (agnostic or classes[k] == classes[i]) or R.iou(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(40))
def test_nms_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 120))
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(0, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    if n > 4:  # duplicates and exact score ties
        boxes[1] = boxes[0]
        boxes[3] = boxes[2]
    scores = rng.choice([0.3, 0.5, 0.7, 0.9], n) if seed % 2 else rng.uniform(0, 1, n)
    classes = rng.integers(0, 3, n)
    thr = [0.0, 0.3, 0.45, 0.7, 1.0][seed % 5]
    for agnostic in (False, True):
        got = R.nms(boxes, scores, classes, np.arange(n), thr, agnostic)
        want = brute_nms(boxes, scores, classes, thr, agnostic)
        assert got.tolist() == want
        for limit in (0, 1, 5):
            assert R.nms(boxes, scores, classes, np.arange(n), thr, agnostic, limit=limit).tolist() == want[:limit]


# -------------------------------------------------------------------- AP


# Padilla et al., "Object-Detection-Metrics" (github.com/rafaelpadilla/Object-Detection-Metrics),
# README example: 7 images, 15 ground truths, 24 detections, IoU threshold 30%;
# published: TP/FP per detection, precision/recall per rank, AP 24.56% (all points; results/results.txt
# prints 24.57%) and 26.84% (11 points). Files groundtruths/*.txt and detections/*.txt
# (class [conf] left top width height). That code measures boxes in inclusive pixels (width + 1),
# so a box (x, y, w, h) is the continuous box (x, y, x + w + 1, y + h + 1) here.
PADILLA_GT = {
    1: [(25, 16, 38, 56), (129, 123, 41, 62)],
    2: [(123, 11, 43, 55), (38, 132, 59, 45)],
    3: [(16, 14, 35, 48), (123, 30, 49, 44), (99, 139, 47, 47)],
    4: [(53, 42, 40, 52), (154, 43, 31, 34)],
    5: [(59, 31, 44, 51), (48, 128, 34, 52)],
    6: [(36, 89, 52, 76), (62, 58, 44, 67)],
    7: [(28, 31, 55, 63), (58, 67, 50, 58)],
}
PADILLA_DET = {  # letter: (image, conf, box)
    "A": (1, .88, (5, 67, 31, 48)), "B": (1, .70, (119, 111, 40, 67)), "C": (1, .80, (124, 9, 49, 67)),
    "D": (2, .71, (64, 111, 64, 58)), "E": (2, .54, (26, 140, 60, 47)), "F": (2, .74, (19, 18, 43, 35)),
    "G": (3, .18, (109, 15, 77, 39)), "H": (3, .67, (86, 63, 46, 45)), "I": (3, .38, (160, 62, 36, 53)),
    "J": (3, .91, (105, 131, 47, 47)), "K": (3, .44, (18, 148, 40, 44)),
    "L": (4, .35, (83, 28, 28, 26)), "M": (4, .78, (28, 68, 42, 67)), "N": (4, .45, (87, 89, 25, 39)),
    "O": (4, .14, (10, 155, 60, 26)),
    "P": (5, .62, (50, 38, 28, 46)), "Q": (5, .44, (95, 11, 53, 28)), "R": (5, .95, (29, 131, 72, 29)),
    "S": (5, .23, (29, 163, 72, 29)),
    "T": (6, .45, (43, 48, 74, 38)), "U": (6, .84, (17, 155, 29, 35)), "V": (6, .43, (95, 110, 25, 42)),
    "X": (7, .48, (16, 20, 101, 88)), "Y": (7, .95, (33, 116, 37, 49)),
}
# Table 2 of the README: the ranking and TP flags
PADILLA_RANK = "R Y J A U C M F D B H P E X N T K Q V I L S G O".split()
PADILLA_TP = set("R J B P E X G".split())


def _padilla():
    inc = lambda b: (b[0], b[1], b[0] + b[2] + 1, b[1] + b[3] + 1)  # noqa: E731
    gts = [(img, inc(b)) for img, bs in PADILLA_GT.items() for b in bs]
    dets = [(img, conf, inc(b)) for img, conf, b in PADILLA_DET.values()]
    return dets, gts


def test_ap_published_toy_example():
    dets, gts = _padilla()
    prec, rec = R.precision_recall(dets, gts, iou=0.3)
    tp = np.cumsum([1 if x in PADILLA_TP else 0 for x in PADILLA_RANK])
    np.testing.assert_allclose(rec, tp / 15)
    np.testing.assert_allclose(prec, tp / np.arange(1, 25))
    # envelope steps: 1 to r=1/15, 2/3 to 2/15, 3/7 to 6/15, 7/23 to 7/15
    want = (1 + 2 / 3 + 4 * 3 / 7 + 7 / 23) / 15
    ap = R.average_precision(dets, gts, iou=0.3)
    assert ap == pytest.approx(want, abs=1e-12)
    assert round(100 * ap, 2) == 24.57
    assert round(100 * R.average_precision(dets, gts, iou=0.3, interpolation="voc11"), 2) == 26.84
    assert R.average_precision(dets, gts, iou=0.3, matching="voc") == pytest.approx(want, abs=1e-12)


def test_ap_small_hand():
    gts = [(0, (0, 0, 10, 10)), (0, (20, 0, 30, 10)), (1, (0, 0, 10, 10))]
    dets = [
        (0, 0.9, (0, 0, 10, 10)),  # TP
        (0, 0.8, (0, 0, 10, 10)),  # duplicate: FP
        (1, 0.7, (0, 0, 10, 9)),  # IoU .9: TP
        (0, 0.6, (20, 0, 25, 10)),  # IoU .5 (>= .5): TP
    ]
    # P/R: (1, 1/3), (1/2, 1/3), (2/3, 2/3), (3/4, 1); envelope: 1, .75, .75, .75
    assert R.average_precision(dets, gts) == pytest.approx(1 / 3 + 0.75 * 2 / 3)
    # at .51 the last one is a FP: P/R (1, 1/3), (1/2, 1/3), (2/3, 2/3), (1/2, 2/3); envelope 1, 2/3
    assert R.average_precision(dets, gts, iou=0.51) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    assert math.isnan(R.average_precision(dets, []))
    assert R.average_precision([], gts) == 0.0
    m, per = R.mean_ap([(i, 0, s, b) for i, s, b in dets] + [(0, 1, 0.5, (0, 0, 1, 1))],
                       [(i, 0, b) for i, b in gts] + [(0, 2, (0, 0, 1, 1))])
    assert per[1] != per[1] and per[2] == 0.0  # class 1: no ground truth (NaN, left out)
    assert m == pytest.approx((1 / 3 + 0.5 + 0.0) / 2)


def _random_eval_set(seed, n_img=6, n_cls=3):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for img in range(n_img):
        for _ in range(rng.integers(0, 6)):
            k = int(rng.integers(0, n_cls))
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(5, 60, 2)
            gts.append((img, k, (x, y, x + w, y + h)))
            for _ in range(rng.integers(0, 3)):  # detections near it (some good, some poor, some wrong class)
                dx, dy = rng.normal(0, 4, 2)
                dw, dh = np.array([w, h]) * np.exp(rng.normal(0, 0.2, 2))
                kk = k if rng.uniform() < 0.8 else int(rng.integers(0, n_cls))
                dets.append((img, kk, float(rng.uniform()), (x + dx, y + dy, x + dx + dw, y + dy + dh)))
        for _ in range(rng.integers(0, 4)):  # background false positives
            x, y = rng.uniform(0, 200, 2)
            w, h = rng.uniform(5, 60, 2)
            dets.append((img, int(rng.integers(0, n_cls)), float(rng.uniform()), (x, y, x + w, y + h)))
    return gts, dets


@pytest.mark.parametrize("seed", range(8))
def test_ap_vs_pycocotools(seed):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_cls = 3
    gts, dets = _random_eval_set(seed, n_cls=n_cls)
    xywh = lambda b: [b[0], b[1], b[2] - b[0], b[3] - b[1]]  # noqa: E731
    ds = {
        "images": [{"id": i, "width": 300, "height": 300} for i in range(6)],
        "categories": [{"id": k + 1, "name": str(k)} for k in range(n_cls)],
        "annotations": [
            {"id": n + 1, "image_id": i, "category_id": k + 1, "bbox": xywh(b), "area": xywh(b)[2] * xywh(b)[3],
             "iscrowd": 0}
            for n, (i, k, b) in enumerate(gts)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = ds
        coco.createIndex()
        res = coco.loadRes([{"image_id": i, "category_id": k + 1, "bbox": xywh(b), "score": s} for i, k, s, b in dets])
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.params.iouThrs[0] == 0.5
    prec = ev.eval["precision"][0, :, :, 0, -1]  # IoU .5, all recall thresholds, every class, area all, 100 dets
    m101, per101 = R.mean_ap(dets, gts, iou=0.5, interpolation="coco101", classes=range(n_cls))
    mall, perall = R.mean_ap(dets, gts, iou=0.5, interpolation="all", classes=range(n_cls))
    for k in range(n_cls):
        if (prec[:, k] > -1).any():
            assert per101[k] == pytest.approx(float(np.mean(prec[:, k])), abs=1e-9), k
            assert perall[k] == pytest.approx(per101[k], abs=0.02), k  # 101 points vs every point
        else:
            assert math.isnan(per101[k])
    assert m101 == pytest.approx(ev.stats[1], abs=1e-9)
    assert mall == pytest.approx(ev.stats[1], abs=0.02)

