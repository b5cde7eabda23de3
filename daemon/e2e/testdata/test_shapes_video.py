"""shapes_video draws what its truth says and scores tracks as CLEAR MOT
does: the truth itself is perfect, ids swapped midway are switches, and
dropping an object's detections gives misses."""
import json

import numpy as np
import pytest

import shapes_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("clip"))
    shapes_video.make(d)
    with open(f"{d}/truth.json") as f:
        return d, json.load(f)


def tracked(truth, track_of=lambda oid, t: oid, keep=lambda oid, t: True):
    classes = {o["id"]: o["class"] for o in truth["objects"]}
    return {"frames": [[{"track_id": track_of(o["id"], t), "class": classes[o["id"]],
                         "box": dict(zip(("x1", "y1", "x2", "y2"), o["box"]))}
                        for o in frame if keep(o["id"], t)] for t, frame in enumerate(truth["truth"])]}


def test_the_scene_moves_crosses_and_leaves(clip):
    _, truth = clip
    frames = truth["truth"]
    assert len(frames) == shapes_video.FRAMES and all(not f for f in frames[-17:])
    seen = {o["id"] for f in frames for o in f}
    assert seen == {1, 2, 3}
    # the circles cross: their boxes overlap, and one hides part of the other
    at = {t: {o["id"]: o for o in f} for t, f in enumerate(frames)}
    crossing = [t for t in at if 1 in at[t] and 2 in at[t] and shapes_video.iou(at[t][1]["box"], at[t][2]["box"]) > 0]
    assert crossing and min(at[t][1]["visible"] for t in crossing) < 1
    # the square crosses both circles' paths: above one and below the other at some frames
    assert any(f[3]["box"][3] < at[t].get(1, {"box": [0, 0, 0, 96]})["box"][1] for t, f in at.items() if 3 in f)
    assert any(f[3]["box"][1] > at[t].get(2, {"box": [0, 0, 0, 0]})["box"][3] for t, f in at.items() if 3 in f)
    img, objs = shapes_video.scene(30)
    assert img.shape == (96, 96, 3) and [o["id"] for o in objs] == [1, 2, 3]


def test_the_truth_scores_perfectly(clip):
    d, truth = clip
    s = shapes_video.score(d, tracked(truth))
    assert s["mota"] == pytest.approx(1.0) and s["num_switches"] == 0
    assert s["tracks"] == {"1": [1], "2": [2], "3": [3]}


def test_swapped_ids_are_switches_and_dropped_detections_misses(clip):
    d, truth = clip
    swapped = shapes_video.score(d, tracked(truth, track_of=lambda oid, t: (3 - oid) if oid < 3 and t >= 40 else oid))
    assert swapped["num_switches"] == 2 and swapped["tracks"]["1"] == [1, 2]
    dropped = shapes_video.score(d, tracked(truth, keep=lambda oid, t: oid != 3))
    assert dropped["num_misses"] > 0 and dropped["mota"] < 0.8 and dropped["num_switches"] == 0


def test_a_wrong_frame_count_is_refused(clip):
    d, truth = clip
    with pytest.raises(SystemExit, match="tracked frames"):
        shapes_video.score(d, {"frames": tracked(truth)["frames"][:-1]})
