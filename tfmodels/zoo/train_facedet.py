"""Trains a face detector, the tiny Faster R-CNN with one label "face", on the generated face
scenes (facescenes.py), and exports it into a model repository, cached outside the clone: the
first step of detect -> crop -> embed, whose crops ident_facenet (train_embed.py) identifies.

    python -m tfmodels.zoo.train_facedet --out models   # install faces_faster_rcnn/1 (trains on a cache miss)

The exported version is cached in ${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/faces_faster_rcnn-<key>/
(its metrics next to it in faces_faster_rcnn-<key>.json and inside it in
golden/facedet_metrics.json), key = trained.cache_key over facescenes.py, identities.py,
shapes.py, this file, train_rcnn.py, faster_rcnn.py, trained.py, common.py, layers.py and the
TensorFlow version; --out copies it into <out>/faces_faster_rcnn/1 (trained.install: temporary
name, then rename). `--retrain` ignores and replaces the cached version; `--smoke` trains a few
steps only (a pipeline check, cached under its own key). Training is deterministic (seeded, TF
op determinism): a cache miss trains the same weights again.

MODEL: faster_rcnn.TINY unchanged (128x128, VGG-16 widths / 16, RPN with 9 anchors of 27/55/109
px, RoIPool 7x7, fc 256, score threshold 0.05, NMS 0.3, 20 detections) with labels ["face"],
built by faster_rcnn.build_graph and exported by train_rcnn.exportable (the OD API signature,
task detect_rcnn; golden/input_images.npy = the first 4 held-out scenes * 1/255, and the
model's outputs for them, which the daemon checks before serving).

RECIPE (RECIPE below): train_rcnn's training step, targets and losses unchanged (train_rcnn.train:
RPN and box-head losses in one tape, 256 anchors and 64 RoIs sampled per image, random
horizontal flips), from He initialisation, on 2000 scenes of facescenes.generate(2000,
"train") (the 300 training identities, seed 0; 3568 heads): 600 steps of 8 scenes, Adam, lr
4e-3 (50 warm-up steps, cosine decay to 2%), global-norm clipping 10. The heads are large
(30-40 px) and of one kind, so a quarter of shapes_faster_rcnn's 2500 steps does. The CLI
defaults TF_ENABLE_ONEDNN_OPTS to 1 (as train_seg).

EVALUATION on 300 held-out scenes (facescenes "heldout": the 20 unseen HELDOUT_IDS, seed 1)
through the exported, reloaded SavedModel: box AP@0.5 (train_rcnn.evaluate: VOC matching,
all-points interpolation, over every detection the model gives, score >= 0.05), and recall and
precision at SCORE_THRESHOLD (0.5, the crop table's min_score in daemon/e2e/facechain_test.go):
a head is found when a detection scoring at least that has IoU >= 0.5 with it (greedy, best
score first, one detection per head).

RESULTS (the .json holds each run's figures): 600 steps in 45 s on two cores shared with another
job (84 s under a heavier load; 6 to 25 s more to draw the scenes). On the 547 heads of the 300
held-out scenes AP@0.5 1.000, and at score >= 0.5 recall 1.000 and precision 1.000 (547
detections, none under 0.5 either), mean IoU of the matched boxes 0.876 (the RPN and box losses
were still falling at step 600: more steps would tighten the boxes, the crops need no more).
Through the whole chain in Python (these detections, crops as daemon/crop cuts them with
facescenes.MARGIN, resized bilinearly to 64 x 64, ident_facenet's nearest gallery identity of
identities.py's protocol; ident_facenet as trained when this was written) 0.971 of the held-out
heads get their identity; with the true boxes 0.976. Through edgeinferd
(daemon/e2e/facechain_test.go: 50 held-out scenes, 94 heads) every head is found and 0.957 are
named right (0.904 also within ident_facenet's distance threshold).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

if __name__ == "__main__":
    # The CLI only (importing this module changes no environment): oneDNN's kernels, as train_seg.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import common, facescenes, faster_rcnn, trained, train_rcnn  # noqa: E402

NAME = "faces_faster_rcnn"
N_EVAL = 300
VERSION = 1
SCORE_THRESHOLD = 0.5  # the recall reported, and the crop table's min_score in the end-to-end test
IOU_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Recipe:
    n_train: int  # facescenes.generate(n_train, "train")
    train: train_rcnn.TrainConfig


RECIPE = Recipe(n_train=2000, train=train_rcnn.TrainConfig(steps=600, lr=4e-3, warmup=50))
# a few seconds: only checks that the pipeline runs (`--smoke`, cached under its own key)
SMOKE = Recipe(n_train=16, train=train_rcnn.TrainConfig(steps=3, lr=4e-3, batch=2, warmup=1))


def config() -> faster_rcnn.RCNNConfig:
    return dataclasses.replace(faster_rcnn.TINY, labels=tuple(facescenes.CLASSES))


def build_model(seed: int = 0) -> keras.Model:
    """The export Keras model (faster_rcnn.build_graph) with the face label."""
    cfg = config()
    keras.utils.set_random_seed(seed)
    inp, out = faster_rcnn.build_graph(cfg)
    model = keras.Model(inp, {k: out[k] for k in faster_rcnn.DETECTION_KEYS}, name="faster_rcnn")
    model.rcnn_config = cfg
    return model


def found(outputs: dict, objects, score_threshold: float = SCORE_THRESHOLD, size: int = facescenes.SIZE,
          iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Recall and precision of the detections scoring >= score_threshold, from OD API outputs
    (normalised ymin, xmin, ymax, xmax): greedy by score, each detection takes the unmatched head
    it overlaps most if IoU >= iou_threshold. Also the mean IoU of the matched pairs."""
    n_gt = n_det = 0
    matched = []
    for i, objs in enumerate(objects):
        n = int(outputs["num_detections"][i])
        keep = outputs["detection_scores"][i, :n] >= score_threshold
        boxes = outputs["detection_boxes"][i, :n][keep] * size
        scores = outputs["detection_scores"][i, :n][keep]
        gt = np.array([(o["box"][1], o["box"][0], o["box"][3], o["box"][2]) for o in objs], np.float64).reshape(-1, 4)
        ious = train_rcnn._iou_np(boxes, gt) if len(objs) else np.zeros((len(boxes), 0))
        used = np.zeros(len(objs), bool)
        for d in np.argsort(-scores, kind="stable"):
            cand = np.where(used, -1.0, ious[d])
            if len(cand) and cand.max() >= iou_threshold:
                used[int(np.argmax(cand))] = True
                matched.append(float(cand.max()))
        n_gt, n_det = n_gt + len(objs), n_det + len(boxes)
    hits = len(matched)
    return {"score_threshold": score_threshold, "recall": hits / max(n_gt, 1), "precision": hits / max(n_det, 1),
            "found": hits, "heads": n_gt, "detections": n_det, "box_iou": float(np.mean(matched)) if matched else 0.0}


def cache_key() -> str:
    files = trained.zoo_files("facescenes.py", "identities.py", "shapes.py", "train_facedet.py", "train_rcnn.py",
                              "faster_rcnn.py", "trained.py", "common.py", "layers.py")
    return trained.cache_key(files, tf.__version__)


class Session:
    """The cache and the training of one CLI run."""

    def __init__(self, recipe: Recipe = RECIPE, log=print):
        self.recipe = recipe
        self.log = log
        self.key = cache_key() + ("" if recipe == RECIPE else "-" + hashlib.sha256(repr(recipe).encode()).hexdigest()[:8])
        self.root = trained.cache_root()

    def cached(self) -> str:
        return os.path.join(self.root, f"{NAME}-{self.key}")

    def make(self) -> str:
        """The cached version directory, trained, exported, evaluated and cached on a miss."""
        path = self.cached()
        if os.path.isdir(path):
            return path
        tf.config.experimental.enable_op_determinism()
        r = self.recipe
        t0 = time.time()
        images, objects = facescenes.generate(r.n_train, "train")
        boxes, classes, valid, _ = train_rcnn.gt_arrays(objects, masks=False)
        data_seconds = round(time.time() - t0, 1)
        self.log(f"generated {r.n_train} training scenes ({int(valid.sum())} heads) in {data_seconds}s")
        model = build_model()
        self.log(f"{NAME}: {model.count_params()} parameters, {r}")
        seconds = train_rcnn.train([model], r.train, (images, boxes, classes, valid, None), self.log)
        ev_images, ev_objects = facescenes.generate(N_EVAL, "heldout")
        os.makedirs(self.root, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{NAME}-", dir=self.root)
        try:
            vdir = common.export(train_rcnn.exportable(model, NAME, ev_images, {}), stage, version=VERSION)
            outputs = train_rcnn.run_saved_model(vdir, ev_images)
            metrics = train_rcnn.evaluate(outputs, ev_objects, 1)
            metrics.update(found(outputs, ev_objects), n_eval=N_EVAL, train_seconds=round(seconds, 1),
                           data_seconds=data_seconds, train_heads=int(valid.sum()), recipe=dataclasses.asdict(r),
                           key=self.key, tensorflow=tf.__version__, onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""))
            trained.store(vdir, path, metrics, "facedet_metrics.json")
            self.log(f"{NAME} cached in {path}")
            return path
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def summary(m: dict) -> str:
    return (f"held-out AP@0.5 {m['map50']:.4f}; at score >= {m['score_threshold']}: recall {m['recall']:.4f} "
            f"({m['found']}/{m['heads']} heads), precision {m['precision']:.4f} (training {m['train_seconds']} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models", help=f"install the trained version into OUT/{NAME}/1")
    ap.add_argument("--retrain", action="store_true", help="ignore (and replace) the cached version")
    ap.add_argument("--smoke", action="store_true", help="a few training steps only (pipeline check; own cache key)")
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    s = Session(SMOKE if args.smoke else RECIPE, log)
    if args.retrain:
        shutil.rmtree(s.cached(), ignore_errors=True)
    src = s.make()
    with open(src + ".json") as f:
        log(f"{NAME}: " + summary(json.load(f)))
    log(f"{NAME} -> {trained.install(src, args.out, NAME, VERSION)} (cache {src})")
    log(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
