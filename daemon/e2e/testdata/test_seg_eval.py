"""seg_eval scores what it should: the truth itself scores 1, a class map
shifted off its shapes scores less, masks that overlap or are missing are
refused."""
import json

import numpy as np
import pytest
from PIL import Image

import seg_eval
from shapes_eval import rle


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("seg"))
    seg_eval.write(d, 48, 6)
    with open(f"{d}/labels.json") as f:
        return d, json.load(f)


def published(d, meta, shift=0, drop=None):
    out = {}
    for e in meta["files"]:
        lab = np.roll(np.asarray(Image.open(f"{d}/{e['labels']}")), shift, axis=1)
        out[e["image"]] = {"classes": [{"class": c, "mask": rle(lab == c)} for c in np.unique(lab) if c != drop]}
    return out


def test_the_truth_scores_one(heldout):
    d, meta = heldout
    s = seg_eval.score(d, published(d, meta))
    assert s["miou"] == pytest.approx(1.0) and s["pixel_accuracy"] == pytest.approx(1.0)


def test_a_shifted_map_and_a_dropped_class_score_less(heldout):
    d, meta = heldout
    assert seg_eval.score(d, published(d, meta, shift=4))["miou"] < 0.8
    dropped = seg_eval.score(d, published(d, meta, drop=1))  # circles fall back to class 0
    assert dropped["iou"][1] == 0.0 and dropped["miou"] < 0.9


def test_overlapping_or_missing_results_are_refused(heldout):
    d, meta = heldout
    res = published(d, meta)
    first = meta["files"][0]["image"]
    res[first]["classes"].append(dict(res[first]["classes"][0], **{"class": 9}))
    with pytest.raises(SystemExit, match="overlaps"):
        seg_eval.score(d, res)
    with pytest.raises(SystemExit, match="no result"):
        seg_eval.score(d, {})
