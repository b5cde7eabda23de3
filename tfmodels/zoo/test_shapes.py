"""Tests for the generated shapes detection set (shapes.py)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tfmodels.zoo import shapes

N, SIZE = 200, 96


@pytest.fixture(scope="module", params=[shapes.TRAIN_SEED, shapes.HELDOUT_SEED], ids=["train", "heldout"])
def split(request):
    return shapes.generate_with_stats(N, SIZE, request.param)


def test_determinism_and_prefix():
    a_img, a_obj = shapes.generate(12, SIZE, 1)
    b_img, b_obj = shapes.generate(12, SIZE, 1)
    c_img, c_obj = shapes.generate(5, SIZE, 1)
    assert a_img.dtype == np.uint8 and a_img.shape == (12, SIZE, SIZE, 3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_img[:5], c_img)
    for x, y in zip(a_obj, b_obj):
        assert [o["class"] for o in x] == [o["class"] for o in y]
        assert [o["box"] for o in x] == [o["box"] for o in y]
        for ox, oy in zip(x, y):
            np.testing.assert_array_equal(ox["mask"], oy["mask"])
    d_img, _ = shapes.generate(12, SIZE, 0)
    assert not np.array_equal(a_img, d_img), "train and held-out splits must differ"


def test_other_size():
    img, obj = shapes.generate(3, 128, 0)
    assert img.shape == (3, 128, 128, 3)
    assert all(o["mask"].shape == (128, 128) for objs in obj for o in objs)


def test_boxes_are_tight_boxes_of_nonempty_masks(split):
    _, objects, _ = split
    for objs in objects:
        for o in objs:
            m = o["mask"]
            assert m.dtype == np.bool_ and m.shape == (SIZE, SIZE)
            assert m.any()
            rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
            want = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
            assert tuple(o["box"]) == want
            assert all(isinstance(v, float) for v in o["box"])
            assert 0 <= o["class"] < len(shapes.CLASSES)


def test_counts_and_class_balance(split):
    _, objects, _ = split
    counts = Counter(len(o) for o in objects)
    assert set(counts) <= {1, 2, 3, 4}
    assert counts[4] >= 1, "at least one image with 4 objects"
    assert counts[1] >= 1
    classes = Counter(o["class"] for objs in objects for o in objs)
    total = sum(classes.values())
    for c in range(len(shapes.CLASSES)):
        assert abs(classes[c] / total - 1 / 3) < 0.07, classes


def test_sizes_in_range(split):
    _, objects, stats = split
    for objs, st in zip(objects, stats):
        for o, s in zip(objs, st):
            # the visible box of the largest (rotated) square is at most sqrt(2) * 45% of the side
            w, h = o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]
            assert max(w, h) <= 0.45 * 1.42 * SIZE + 1
            # the full (uncropped, unoccluded) shape is no smaller than a 12% triangle
            assert s["full_area"] >= (np.sqrt(3) / 4) * (0.12 * SIZE) ** 2 * 0.8


def test_occlusion_rule(split):
    _, objects, stats = split
    occluded = 0
    for objs, st in zip(objects, stats):
        union = np.zeros((SIZE, SIZE), dtype=np.int32)
        for o, s in zip(objs, st):
            union += o["mask"]
            assert s["visible"] >= shapes.MIN_VISIBLE
            assert o["mask"].sum() == pytest.approx(s["visible"] * s["full_area"])
            occluded += s["visible"] < 0.95
        assert union.max() <= 1, "visible masks are disjoint"
    assert occluded > 0, "some shapes are partly hidden (occlusion or border)"


def test_colour_separated_from_background(split):
    images, objects, _ = split
    # the mean colour of an object is far from the mean colour of the ring just around it
    from scipy.ndimage import binary_dilation

    dists = []
    for img, objs in zip(images[:60], objects[:60]):
        for o in objs:
            m = o["mask"]
            ring = binary_dilation(m, iterations=2) & ~m
            if ring.sum() < 10:
                continue
            dists.append(np.linalg.norm(img[m].mean(0) - img[ring].mean(0)))
    assert np.median(dists) > 60


def test_write_dir(tmp_path):
    from PIL import Image

    images, objects = shapes.generate(3, SIZE, 1)
    shapes.write_dir(str(tmp_path), images, objects)
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert len(labels) == 3
    for i, entry in enumerate(labels):
        img = np.asarray(Image.open(tmp_path / entry["file"]).convert("RGB"))
        np.testing.assert_array_equal(img, images[i])
        masks = np.load(tmp_path / entry["masks"])
        assert masks.shape == (len(objects[i]), SIZE, SIZE) and masks.dtype == np.bool_
        for j, o in enumerate(entry["objects"]):
            assert o["class"] == objects[i][j]["class"]
            assert o["label"] == shapes.CLASSES[o["class"]]
            assert o["box"] == list(objects[i][j]["box"])
            np.testing.assert_array_equal(masks[j], objects[i][j]["mask"])


# --------------------------------------------------------------------------
# train_yolov3.py: the numpy side (targets, augmentation, decode, NMS, AP); no training here.

from tfmodels.zoo import train_yolov3 as ty  # noqa: E402


def test_average_precision_by_hand():
    # two ground truths; detections ranked TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # all-points interpolation: 0.5 * 1 + 0.5 * 2/3
    gts = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]], np.float32)]
    dets = [np.array([[0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.8, 0], [20, 20, 30, 31, 0.7, 0]])]
    m, aps = ty.mean_ap(dets, gts, num_classes=1)
    assert m == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a duplicate of a matched box is a false positive; a wrong class matches nothing
    dets = [np.array([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0], [20, 20, 30, 30, 0.7, 1]])]
    m, aps = ty.mean_ap(dets, gts, num_classes=1)
    assert m == pytest.approx(0.5)


def test_nms_per_class():
    d = np.array([[0, 0, 10, 10, 0.9, 0], [1, 0, 11, 10, 0.8, 0], [1, 0, 11, 10, 0.7, 1], [30, 30, 40, 40, 0.6, 0]])
    k = ty.nms(d)
    assert k[:, 4].tolist() == [0.9, 0.7, 0.6]


def test_dihedral_matches_masks():
    images, objects = shapes.generate(6, SIZE, 1)
    for i in range(6):
        boxes = ty.boxes_of(objects[i])
        for k in range(8):
            _, b = ty.dihedral(images[i], boxes, k)
            for o, bb in zip(objects[i], b):
                m, _ = ty.dihedral(o["mask"][..., None], boxes[:1], k)
                rows, cols = np.nonzero(m[..., 0].any(1))[0], np.nonzero(m[..., 0].any(0))[0]
                assert tuple(bb[:4]) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
                assert bb[4] == o["class"]


def test_crops_have_tight_boxes():
    images, objects = shapes.generate(20, SIZE, 0)
    b = ty.Batches(images, objects, np.random.default_rng(0))
    for i in range(20):
        img, keep, frag = b.crop(i, 64)
        assert img.shape == (64, 64, 3)
        assert np.all(keep[:, :2] >= 0) and np.all(keep[:, 2:4] <= 64)
        assert len(keep) + len(frag) <= len(objects[i])
    x, ys, gt = b.next(8, 64)
    assert x.shape == (8, 64, 64, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert [y.shape[1] for y in ys] == [8, 4, 2]


def test_targets_decode_to_the_ground_truth():
    # grids made from the targets (as a perfect network would output them) decode to every box
    images, objects = shapes.generate(100, SIZE, 1)
    boxes = [ty.boxes_of(o) for o in objects]
    anc = ty.anchors(SIZE)
    ys, _ = ty.targets(boxes, SIZE, anc, assign_iou=0.0)
    assert sum(int(y[..., 5].sum()) for y in ys) == sum(len(b) for b in boxes), "every box has a slot"
    grids = {}
    for y, s in zip(ys, ty.STRIDES):
        raw = np.zeros(y.shape[:-1] + (5 + ty.NUM_CLASSES,))
        t = np.clip(y[..., 0:2], 1e-6, 1 - 1e-6)
        raw[..., 0:2] = np.log(t / (1 - t))
        raw[..., 2:4] = y[..., 2:4]
        raw[..., 4] = np.where(y[..., 5] > 0, 12.0, -12.0)
        raw[..., 5:] = np.where(y[..., 6:] > 0, 12.0, -12.0)
        grids[f"grid_s{s}"] = raw.reshape(raw.shape[:3] + (-1,))
    dets = [ty.nms(d) for d in ty.decode(grids, SIZE, anc)]
    m, _ = ty.mean_ap(dets, boxes)
    assert m > 0.98  # NMS may merge two same-class boxes overlapping by > 0.45
    # extra positives (iou_thresh) decode to the same boxes, which NMS merges
    ys2, _ = ty.targets(boxes, SIZE, anc, assign_iou=0.213)
    assert sum(int(y[..., 5].sum()) for y in ys2) > sum(int(y[..., 5].sum()) for y in ys)
