"""A generated video of shapes moving, crossing and leaving, for the tracker
test, and the scoring of tracks against it with py-motmetrics.

    shapes_video.py make DIR [SIZE]
        writes DIR/clip.mkv (lossless FFV1, SIZE x SIZE (default 96), FPS frames per second,
        FRAMES frames, encoded by ffmpeg) and DIR/truth.json:
          {"fps", "size", "frames", "objects": [{"id", "class", "label"}],
           "truth": [[{"id", "box": [x1, y1, x2, y2], "visible"}] per frame]}
        "box" is the tight box of the object's visible pixels; "visible" the
        fraction of its full area that is visible (inside the frame, not hidden
        by a shape drawn over it).

    shapes_video.py score DIR TRACKED
        TRACKED: {"frames": [[detection, ...] per frame]}, each detection as the
        daemon publishes it ({"track_id", "class", "box": {"x1", ...}}).
        Prints {"mota", "num_switches", "num_misses", "num_false_positives",
        "num_objects", "tracks": {object id: [track ids matched to it]}}.

The scene (FPS 10, 80 frames; positions, sizes and speeds below are for 96 x 96
and scale with SIZE): two circles (one class, two colours) cross each other
going opposite ways, close enough that their boxes overlap and the one drawn
on top hides a sliver of the other; a square comes in from the top and goes
down across both their paths (after the lower circle has passed, before the
upper one comes); all three have left the frame from frame 63 on, and the
last 1.7 s are empty, so a tracker with max_age 1 s reports each one gone.
An object counts in a frame when at least MIN_VISIBLE of it is visible; less
visible, it is "don't care": a detection on it (of any class: a sliver of a
circle may look like anything) is neither a miss nor a false positive (as
MOTChallenge ignores occluded and cut-off objects). Matching:
same class and box IoU >= 0.5 (distance 1 - IoU), the CLEAR MOT association of motmetrics.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from tfmodels.zoo import shapes  # noqa: E402
import scriptcli  # noqa: E402

SIZE, FPS, FRAMES = 96, 10, 80
MIN_VISIBLE = 0.5
MATCH_IOU = 0.5
BACKGROUND = (90, 110, 100)
NOISE = 10.0
# id, class, nominal size (px), colour, centre at frame t: (x0 + vx t, y0 + vy t); drawn in this order
OBJECTS = [
    (1, "circle", 28, (220, 40, 40), (4.0, 34.0), (1.7, 0.0)),
    (2, "circle", 28, (235, 215, 40), (92.0, 56.0), (-1.7, 0.0)),
    (3, "square", 24, (40, 60, 225), (76.0, -12.0), (0.0, 2.0)),
]


def full_mask(cls: str, cx: float, cy: float, s: float, size: int, pad: int) -> np.ndarray:
    """The whole shape on a canvas of size + 2 pad (so parts outside the frame count)."""
    n = size + 2 * pad
    return shapes._raster(shapes.CLASSES.index(cls), cx + pad, cy + pad, s, 0.0, 0, n, 0, n)


def scene(t: int, size: int = SIZE):
    pad, k = size, size / SIZE
    img = np.empty((size, size, 3), np.float64)
    img[:] = BACKGROUND
    owner = np.zeros((size, size), np.int32)
    fulls = {}
    for oid, cls, s, colour, (x0, y0), (vx, vy) in OBJECTS:
        m = full_mask(cls, k * (x0 + vx * t), k * (y0 + vy * t), k * s, size, pad)
        fulls[oid] = int(m.sum())
        inside = m[pad:pad + size, pad:pad + size]
        img[inside] = colour
        owner[inside] = oid
    rng = np.random.default_rng([7, t])
    img = np.clip(np.rint(img + rng.normal(0, NOISE, img.shape)), 0, 255).astype(np.uint8)
    truth = []
    for oid, *_ in OBJECTS:
        vis = owner == oid
        if not vis.any():
            continue
        ys, xs = np.nonzero(vis)
        truth.append({"id": oid, "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                      "visible": round(float(vis.sum()) / fulls[oid], 4)})
    return img, truth


def make(dir: str, size: int = SIZE) -> None:
    os.makedirs(dir, exist_ok=True)
    frames, truth = zip(*(scene(t, size) for t in range(FRAMES)))
    clip = os.path.join(dir, "clip.mkv")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{size}x{size}", "-r", str(FPS), "-i", "-", "-c:v", "ffv1", clip],
                   input=np.stack(frames).tobytes(), check=True)
    objects = [{"id": oid, "class": shapes.CLASSES.index(cls), "label": cls} for oid, cls, *_ in OBJECTS]
    with open(os.path.join(dir, "truth.json"), "w") as f:
        json.dump({"fps": FPS, "size": size, "frames": FRAMES, "objects": objects, "truth": list(truth)}, f)


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def score(dir: str, tracked: dict) -> dict:
    import motmetrics as mm

    with open(os.path.join(dir, "truth.json")) as f:
        t = json.load(f)
    classes = {o["id"]: o["class"] for o in t["objects"]}
    frames = tracked["frames"]
    if len(frames) != t["frames"]:
        raise SystemExit(f"{len(frames)} tracked frames, the clip has {t['frames']}")
    acc = mm.MOTAccumulator(auto_id=True)
    for truth, dets in zip(t["truth"], frames):
        counted = [o for o in truth if o["visible"] >= MIN_VISIBLE]
        ignored = [o for o in truth if o["visible"] < MIN_VISIBLE]
        hyps = []
        for d in dets:
            b = d["box"]
            box = [b["x1"], b["y1"], b["x2"], b["y2"]]
            if any(iou(box, o["box"]) >= MATCH_IOU for o in ignored):
                continue  # on a don't-care object, whatever the class it was given
            hyps.append((d["track_id"], d["class"], box))
        dist = np.full((len(counted), len(hyps)), np.nan)
        for i, o in enumerate(counted):
            for j, (_, c, box) in enumerate(hyps):
                v = iou(o["box"], box)
                if c == classes[o["id"]] and v >= MATCH_IOU:
                    dist[i, j] = 1.0 - v
        acc.update([o["id"] for o in counted], [h[0] for h in hyps], dist)
    mh = mm.metrics.create()
    s = mh.compute(acc, metrics=["mota", "num_switches", "num_misses", "num_false_positives", "num_objects"], name="clip")
    ev = acc.mot_events
    matched = ev[ev.Type.isin(["MATCH", "SWITCH"])]
    tracks = {str(o["id"]): sorted({int(h) for h in matched[matched.OId == o["id"]].HId}) for o in t["objects"]}
    out = {k: (float(s[k].iloc[0]) if k == "mota" else int(s[k].iloc[0]))
           for k in ["mota", "num_switches", "num_misses", "num_false_positives", "num_objects"]}
    out["tracks"] = tracks
    return out


if __name__ == "__main__":
    sys.exit(scriptcli.run(__doc__, ("make", make, 0, 1), score))
