"""The held-out segmentation set for the segmenter tests, and its scoring.

    seg_eval.py write DIR SIZE N
        writes the first N held-out images (tfmodels.zoo.segshapes, HELDOUT_SEED)
        of SIZE x SIZE into DIR with segshapes.write_dir: NNNN.png,
        NNNN_labels.png (pixel = class index) and labels.json.

    seg_eval.py score DIR RESULTS
        RESULTS is a JSON object {"NNNN.png": output, ...}, each output as the
        segment plugin publishes it: {"classes": [{"class", "mask": {"size",
        "counts"}}, ...]}. The class map of each image is rebuilt from the
        COCO RLE masks (pycocotools decodes them; a pixel no mask covers is
        class 0), and scored against the label PNG with a confusion matrix.
        Prints {"miou", "iou": [per class], "pixel_accuracy", "images"}.

Nothing here shares code with the segment plugin or the trainer: the truth is
what segshapes.py drew, the masks are decoded by pycocotools.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from tfmodels.zoo import segshapes  # noqa: E402
import scriptcli  # noqa: E402


def write(dir: str, size: int, n: int) -> None:
    images, labels = segshapes.generate(n, size, segshapes.HELDOUT_SEED)
    segshapes.write_dir(dir, images, labels)


def class_map(output: dict, h: int, w: int) -> np.ndarray:
    cls = np.zeros((h, w), np.int64)
    covered = np.zeros((h, w), bool)
    for c in output["classes"]:
        m = mask_utils.decode({"size": c["mask"]["size"], "counts": c["mask"]["counts"].encode()}).astype(bool)
        if m.shape != (h, w):
            raise SystemExit(f"class {c['class']}: mask of {m.shape}, the image is {(h, w)}")
        if (m & covered).any():
            raise SystemExit(f"class {c['class']}: its mask overlaps another class's")
        cls[m], covered = c["class"], covered | m
    return cls


def score(dir: str, results: dict) -> dict:
    with open(os.path.join(dir, "labels.json")) as f:
        meta = json.load(f)
    n = len(meta["classes"])
    conf = np.zeros((n, n), np.int64)  # [truth, predicted]
    missing = [e["image"] for e in meta["files"] if e["image"] not in results]
    if missing:
        raise SystemExit(f"no result for {len(missing)} images, e.g. {missing[:3]}")
    for e in meta["files"]:
        truth = np.asarray(Image.open(os.path.join(dir, e["labels"]))).astype(np.int64)
        pred = class_map(results[e["image"]], *truth.shape)
        conf += np.bincount(truth.ravel() * n + pred.ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)), "iou": [None if np.isnan(v) else round(float(v), 4) for v in iou],
            "pixel_accuracy": float(inter.sum() / conf.sum()), "images": len(meta["files"])}


if __name__ == "__main__":
    sys.exit(scriptcli.run(__doc__, ("write", write, 2, 2), score))
