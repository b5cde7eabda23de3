"""The held-out shapes set for the detector tests, and its scoring with pycocotools.

    shapes_eval.py write DIR SIZE N
        writes the first N held-out images (tfmodels.zoo.shapes, HELDOUT_SEED) of
        SIZE x SIZE into DIR with shapes.write_dir: NNNN.png, NNNN_masks.npy, labels.json.

    shapes_eval.py score DIR DETECTIONS
        DETECTIONS is a JSON object {"NNNN.png": [detection, ...]}, each detection as
        the detect plugin publishes it: {"class", "score", "box": {"x1", "y1", "x2",
        "y2"}, "mask": {"size", "counts"} (optional)}, boxes in image pixels.
        Prints one JSON object:
          map50       box AP at IoU 0.5 (COCOeval "bbox", all areas, 100 detections)
          mask_map50  the same for the masks (COCOeval "segm"), when masks were given
          mask_iou    the mean mask IoU of the detections COCOeval matched to a ground
                      truth object at box IoU 0.5 (the true positives), when masks were given
          images, objects, detections, true_positives

The ground truth is what shapes.py drew, and the scoring is pycocotools': nothing
here shares code with the detect plugin or the trainers.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from tfmodels.zoo import shapes  # noqa: E402
import scriptcli  # noqa: E402


def write(dir: str, size: int, n: int) -> None:
    images, objects = shapes.generate(n, size, shapes.HELDOUT_SEED)
    shapes.write_dir(dir, images, objects)


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def coco_sets(dir: str, detections: dict):
    with open(os.path.join(dir, "labels.json")) as f:
        labels = json.load(f)
    images, gts, dets = [], [], []
    with_masks = any("mask" in d for ds in detections.values() for d in ds)
    for img_id, item in enumerate(labels, start=1):
        masks = np.load(os.path.join(dir, item["masks"]))
        h, w = masks.shape[1:]  # [objects, H, W], also with no object
        images.append({"id": img_id, "file_name": item["file"], "width": int(w), "height": int(h)})
        for k, o in enumerate(item["objects"]):
            x1, y1, x2, y2 = o["box"]
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": o["class"] + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(masks[k].sum()),
                        "segmentation": rle(masks[k]), "iscrowd": 0})
        for d in detections.get(item["file"], []):
            b = d["box"]
            det = {"image_id": img_id, "category_id": d["class"] + 1, "score": d["score"],
                   "bbox": [b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]]}
            if with_masks:
                det["segmentation"] = d["mask"]
            dets.append(det)
    unknown = set(detections) - {i["file_name"] for i in images}
    if unknown:
        raise SystemExit(f"detections for images not in {dir}/labels.json: {sorted(unknown)[:5]}")
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(shapes.CLASSES)]
    return {"images": images, "annotations": gts, "categories": cats}, dets, with_masks


def evaluate(gt: COCO, dets: list, kind: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress on stdout
        dt = gt.loadRes([dict(d) for d in dets]) if dets else COCO()
        e = COCOeval(gt, dt, kind)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def score(dir: str, detections: dict) -> dict:
    dataset, dets, with_masks = coco_sets(dir, detections)
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    box_dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
    e = evaluate(gt, box_dets, "bbox")
    out = {"map50": float(e.stats[1]), "images": len(dataset["images"]), "objects": len(dataset["annotations"]),
           "detections": len(dets)}
    # the true positives at IoU 0.5: evalImgs of the whole area range, its dtMatches at iouThrs[0]
    all_area = e.params.areaRng[0]
    matches = []
    for ev in e.evalImgs:
        if ev is None or ev["aRng"] != all_area:
            continue
        for j, g in zip(ev["dtIds"], ev["dtMatches"][0]):
            if g > 0:
                matches.append((j, int(g)))
    out["true_positives"] = len(matches)
    if with_masks:
        out["mask_map50"] = float(evaluate(gt, dets, "segm").stats[1])
        dt_masks = {k + 1: d["segmentation"] for k, d in enumerate(dets)}  # loadRes numbers detections from 1
        ious = [float(mask_utils.iou([dt_masks[j]], [gt.anns[g]["segmentation"]], [0])[0, 0]) for j, g in matches]
        out["mask_iou"] = float(np.mean(ious)) if ious else 0.0
    return out


if __name__ == "__main__":
    sys.exit(scriptcli.run(__doc__, ("write", write, 2, 2), score))
