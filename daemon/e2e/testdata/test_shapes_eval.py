"""shapes_eval scores what it should: the ground truth itself scores 1, boxes
moved off their objects or given the wrong class score 0, and half of the
objects found give the AP of a recall of one half."""
import json

import numpy as np
import pytest

import shapes_eval


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("shapes"))
    shapes_eval.write(d, 64, 12)
    with open(f"{d}/labels.json") as f:
        return d, json.load(f)


def as_published(d, item, move=0.0, relabel=0, keep=lambda k: True):
    masks = np.load(f"{d}/{item['masks']}")
    out = []
    for k, o in enumerate(item["objects"]):
        if not keep(k):
            continue
        x1, y1, x2, y2 = o["box"]
        dx = move * (x2 - x1)
        out.append({"class": (o["class"] + relabel) % 3, "score": 0.9 - 0.01 * k,
                    "box": {"x1": x1 + dx, "y1": y1, "x2": x2 + dx, "y2": y2},
                    "mask": shapes_eval.rle(np.roll(masks[k], int(round(dx)), axis=1))})
    return out


def test_the_ground_truth_scores_one(heldout):
    d, labels = heldout
    r = shapes_eval.score(d, {it["file"]: as_published(d, it) for it in labels})
    assert r["map50"] == pytest.approx(1.0) and r["mask_map50"] == pytest.approx(1.0)
    assert r["mask_iou"] == pytest.approx(1.0)
    assert r["true_positives"] == r["objects"] == sum(len(it["objects"]) for it in labels)


def test_moved_or_relabelled_boxes_score_zero(heldout):
    d, labels = heldout
    moved = shapes_eval.score(d, {it["file"]: as_published(d, it, move=0.6) for it in labels})
    assert moved["map50"] == 0.0 and moved["true_positives"] == 0
    relabelled = shapes_eval.score(d, {it["file"]: as_published(d, it, relabel=1) for it in labels})
    assert relabelled["map50"] == 0.0


def test_masks_off_their_objects_lower_the_mask_iou_only(heldout):
    d, labels = heldout
    r = shapes_eval.score(d, {it["file"]: as_published(d, it, move=0.2) for it in labels})
    assert r["true_positives"] > 0 and r["mask_iou"] < 0.8


def test_half_the_objects_give_at_most_half_the_ap(heldout):
    d, labels = heldout
    r = shapes_eval.score(d, {it["file"]: as_published(d, it, keep=lambda k: k % 2 == 0) for it in labels})
    assert 0.2 < r["map50"] <= 0.75
    assert r["true_positives"] == sum((len(it["objects"]) + 1) // 2 for it in labels)


def test_no_detections_score_zero_and_unknown_images_are_refused(heldout):
    d, _ = heldout
    assert shapes_eval.score(d, {})["map50"] <= 0.0
    with pytest.raises(SystemExit, match="not in"):
        shapes_eval.score(d, {"nope.png": []})
