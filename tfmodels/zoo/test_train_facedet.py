"""Fast tests of train_facedet.py: the recall and precision it reports on hand-made detections,
and the distractors it counts as taken for faces, its cache key and paths, and a smoke training through the CLI whose export is a one-label
detect_rcnn version with golden files, cached and then installed from the cache (no real
training here; train_facedet.py prints its own held-out metrics).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_train_facedet.py
"""
from __future__ import annotations

import json
import os
import re
import tomllib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfmodels.zoo import facescenes, faster_rcnn  # noqa: E402
from tfmodels.zoo import train_facedet as T  # noqa: E402


def outputs(dets):
    """OD API outputs of one image from (x1, y1, x2, y2 pixels, score) rows, padded to 4 slots."""
    boxes = np.zeros((1, 4, 4), np.float32)
    scores = np.zeros((1, 4), np.float32)
    for j, (x1, y1, x2, y2, s) in enumerate(dets):
        boxes[0, j] = np.array([y1, x1, y2, x2]) / facescenes.SIZE
        scores[0, j] = s
    return {"detection_boxes": boxes, "detection_scores": scores, "num_detections": np.array([len(dets)], np.float32)}


def test_found_counts_each_head_once_above_the_threshold():
    heads = [[{"class": 0, "box": (0, 0, 20, 20)}, {"class": 0, "box": (50, 50, 80, 80)}]]
    got = T.found(outputs([
        (0, 0, 20, 20, 0.9),     # head 0, IoU 1
        (1, 1, 21, 21, 0.8),     # head 0 again: a duplicate, not a second find
        (50, 50, 80, 80, 0.4),   # head 1, but under the threshold
        (100, 100, 120, 120, 0.7),  # nothing there
    ]), heads, score_threshold=0.5)
    assert (got["found"], got["heads"], got["detections"]) == (1, 2, 3)
    assert got["recall"] == 0.5 and got["precision"] == pytest.approx(1 / 3) and got["box_iou"] == 1.0
    got = T.found(outputs([(50, 50, 80, 80, 0.4)]), heads, score_threshold=0.3)
    assert got["found"] == 1 and got["precision"] == 1.0
    # IoU under 0.5 is a miss: [0, 20) against [10, 30) in x, same rows: 10*20 / (30*20) = 1/3
    assert T.found(outputs([(10, 0, 30, 20, 0.9)]), heads)["found"] == 0


def test_found_on_a_scene_without_heads():
    got = T.found(outputs([(0, 0, 10, 10, 0.9)]), [[]])
    assert (got["found"], got["heads"], got["detections"], got["recall"], got["precision"]) == (0, 0, 1, 0.0, 0.0)


def test_on_distractors_counts_those_a_detection_above_the_threshold_covers():
    D = facescenes.Distractor
    disc = D("disc", 30.0, 30.0, 10.0, 0.0, (100.0, 100.0, 100.0))  # box (20, 20, 40, 40)
    square = D("square", 90.0, 90.0, 20.0, 0.0, (100.0, 100.0, 100.0))  # box (80, 80, 100, 100)
    partial = D("partial", 30.0, 90.0, 10.0, 0.0, (100.0, 100.0, 100.0), ())  # box (20, 80, 40, 100)
    assert (disc.box(), square.box(), partial.box()) == ((20, 20, 40, 40), (80, 80, 100, 100), (20, 80, 40, 100))
    got = T.on_distractors(outputs([
        (20, 20, 40, 40, 0.9),     # the disc
        (80, 80, 100, 100, 0.3),   # the square, under the threshold
        (30, 80, 50, 100, 0.9),    # the partial face, IoU 1/3: not taken for a face
    ]), [[disc, square, partial]])
    assert got["disc"] == {"n": 1, "detected": 1, "rate": 1.0}
    assert got["square"]["detected"] == 0 and got["partial"]["detected"] == 0 and got["triangle"]["n"] == 0
    assert got["all"] == {"n": 3, "detected": 1, "rate": pytest.approx(1 / 3)}
    assert T.on_distractors(outputs([(80, 80, 100, 100, 0.3)]), [[square]], score_threshold=0.2)["square"]["rate"] == 1


def test_cache_key_and_paths(monkeypatch, tmp_path):
    k = T.cache_key()
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert T.Session().cached() == os.path.join(str(tmp_path), "edgeinfer", "trained", f"{T.NAME}-{k}")
    assert T.Session(T.SMOKE).key.startswith(k + "-")


def test_the_model_is_the_tiny_faster_rcnn_with_one_label():
    cfg = T.config()
    assert cfg.labels == ("face",) and cfg.num_classes == 1
    assert (cfg.size, cfg.width_div, cfg.anchor_scales, cfg.max_detections) == (128, 16, (27, 55, 109), 20)


def test_smoke_training_exports_a_servable_version(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "models"
    assert T.main(["--smoke", "--out", str(out)]) == 0
    vdir = out / T.NAME / "1"
    with open(vdir / "edgeinfer.toml", "rb") as f:
        spec = tomllib.load(f)
    assert spec["task"] == "detect_rcnn" and spec["labels"] == ["face"] and spec["signature"] == "serving_default"
    assert (spec["input"]["height"], spec["input"]["width"], spec["input"]["channels"]) == (128, 128, 3)
    assert spec["output"] == {"boxes": "detection_boxes", "scores": "detection_scores",
                              "classes": "detection_classes", "num_detections": "num_detections", "label_offset": 1}
    g = vdir / "golden"
    images, _ = facescenes.generate(4, "heldout")
    np.testing.assert_allclose(np.load(g / "input_images.npy"), images.astype(np.float32) / 255, atol=1e-7)
    for k in faster_rcnn.DETECTION_KEYS:
        assert np.load(g / f"output_{k}.npy").shape[0] == 4
    with open(g / "facedet_metrics.json") as f:
        m = json.load(f)
    assert m["n_eval"] == T.N_EVAL and m["score_threshold"] == T.SCORE_THRESHOLD and m["train_seconds"] > 0
    assert 0 <= m["recall"] <= 1 and 0 <= m["map50"] <= 1 and m["heads"] > T.N_EVAL
    assert set(m["distractors"]) == set(facescenes.KINDS) | {"all"} and m["distractors"]["all"]["n"] > T.N_EVAL
    assert sum(m["distractors"][k]["n"] for k in facescenes.KINDS) == m["distractors"]["all"]["n"]
    assert os.path.exists(str(tmp_path / "cache" / "edgeinfer" / "trained" / f"{T.NAME}-{m['key']}.json"))
    # a second run installs from the cache without training
    lines = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert T.main(["--smoke", "--out", str(out)]) == 0
    assert not any("parameters" in ln for ln in lines) and any("-> " in ln for ln in lines)
