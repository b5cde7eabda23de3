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
"train") (the 300 training identities, seed 0; 3568 heads among 3107 unlabelled distractors:
1046 plain discs, 530 discs with one or two face parts, 721 squares, 810 triangles): 1500 steps
of 8 scenes, Adam, lr 4e-3 (50 warm-up steps, cosine decay to 2%), global-norm clipping 10. The
distractors are learnt as background only (the RPN's negative anchors and the box head's
background RoIs, proposals on them among those). 600 steps (as many as before the scenes had
distractors) left 36 of the 81 held-out partial faces, 6 of 118 triangles and 1 of 164 plain
discs taken for faces (AP@0.5 0.994, precision 0.925); 1500 steps, 60% of shapes_faster_rcnn's
2500, fit the time. 3000 training scenes instead of 2000 did no better (21 partial faces), nor did more
partial faces among the distractors (KIND_P 0.3, 0.3, 0.2, 0.2: 21 of 138). The CLI defaults
TF_ENABLE_ONEDNN_OPTS to 1 (as train_seg).

EVALUATION on 300 held-out scenes (facescenes "heldout": the 20 unseen HELDOUT_IDS, seed 1; 547
heads, 475 distractors) through the exported, reloaded SavedModel: box AP@0.5
(train_rcnn.evaluate: VOC matching, all-points interpolation, over every detection the model
gives, score >= 0.05: a detection on a distractor is a false positive), and recall and
precision at SCORE_THRESHOLD (0.5, the crop table's min_score in daemon/e2e/facechain_test.go):
a head is found when a detection scoring at least that has IoU >= 0.5 with it (greedy, best
score first, one detection per head); and per distractor kind ("distractors" in the metrics)
how many a detection scoring >= 0.5 overlaps with IoU >= 0.5 (on_distractors): taken for a
face, its crop would be sent to the embedding.

RESULTS (the .json holds each run's figures; below, with identities.TRAIN_IDS 0..299, the set
when these were measured; with 0..999: AP@0.5 0.999, recall 1.000, precision 0.966, 19 of the
475 distractors taken for faces (15 partial faces, 4 triangles), 74 s of training; through
edgeinferd every head found, 0.989 named right by the retrained ident_facenet, 6 crops of no
face): 1500 steps in 119 to 189 s on two cores shared
with other jobs (load average 7 to 13; 15 to 30 s more to draw the scenes); a whole run (drawing,
training, export, evaluation) took 113 s of CPU time, so the training needs under 2 minutes on
two idle cores. On the 300
held-out scenes AP@0.5 0.999, and at score >= 0.5 recall 1.000 (547 of 547 heads) and
precision 0.979 (559 detections), mean IoU of the matched boxes 0.900. Distractors taken for
faces at score >= 0.5: plain discs 0 of 164, partial faces 11 of 81 (0 of the 39 with one
part, 11 of the 42 with two: the hard case), squares 0 of 112, triangles 1 of 118; every false positive at 0.5 is on a distractor. The
detector of the recipe before (600 steps on scenes without distractors: AP@0.5, recall and
precision 1.000 on those) on these scenes: AP@0.5 0.962, recall 0.998, precision 0.708 (771
detections), and it takes 66 of the 164 plain discs, 72 of the 81 partial faces, 20 of the 112
squares and 42 of the 118 triangles for faces.
Through the whole chain in Python (these detections, crops as daemon/crop cuts them with
facescenes.MARGIN, resized bilinearly to 64 x 64, ident_facenet's nearest gallery identity of
identities.py's protocol; ident_facenet as trained when this was written) 0.963 of the held-out
heads get their identity (0.973 with the true boxes; 0.971 and 0.976 on the scenes without
distractors), and 3 of the 12 false-positive crops come within ident_facenet's distance
threshold of a gallery identity (46 of 225 with the detector of the recipe before). Through
edgeinferd (daemon/e2e/facechain_test.go: 50 held-out scenes, 94 heads, 79 distractors) every
head is found, 0.968 are named right (0.926 also within the threshold), and 4 crops are of no
face, each a partial face (34 with the detector of the recipe before: 7 plain discs, 12
partial faces, 1 square, 8 triangles and 6 on nothing drawn).
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


RECIPE = Recipe(n_train=2000, train=train_rcnn.TrainConfig(steps=1500, lr=4e-3, warmup=50))
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


def on_distractors(outputs: dict, distractors, score_threshold: float = SCORE_THRESHOLD, size: int = facescenes.SIZE,
                   iou_threshold: float = IOU_THRESHOLD) -> dict:
    """The distractors (facescenes.Distractor records per scene) taken for faces: per kind (and
    "all"), how many there are and how many a detection scoring >= score_threshold overlaps with
    IoU >= iou_threshold (the distractor's outline box), and that fraction."""
    counts = {k: [0, 0] for k in facescenes.KINDS + ("all",)}
    for i, ds in enumerate(distractors):
        n = int(outputs["num_detections"][i])
        keep = outputs["detection_scores"][i, :n] >= score_threshold
        boxes = outputs["detection_boxes"][i, :n][keep] * size
        for d in ds:
            x1, y1, x2, y2 = d.box(size)
            hit = len(boxes) > 0 and train_rcnn._iou_np(boxes, [(y1, x1, y2, x2)]).max() >= iou_threshold
            for k in (d.kind, "all"):
                counts[k][0] += 1
                counts[k][1] += int(hit)
    return {k: {"n": n, "detected": hit, "rate": hit / max(n, 1)} for k, (n, hit) in counts.items()}


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
        ev_images, ev_heads, ev_distractors = facescenes.generate_scenes(N_EVAL, "heldout")
        ev_objects = facescenes.objects(ev_heads)
        os.makedirs(self.root, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{NAME}-", dir=self.root)
        try:
            vdir = common.export(train_rcnn.exportable(model, NAME, ev_images, {}), stage, version=VERSION)
            outputs = train_rcnn.run_saved_model(vdir, ev_images)
            metrics = train_rcnn.evaluate(outputs, ev_objects, 1)
            metrics.update(found(outputs, ev_objects), distractors=on_distractors(outputs, ev_distractors),
                           n_eval=N_EVAL, train_seconds=round(seconds, 1),
                           data_seconds=data_seconds, train_heads=int(valid.sum()), recipe=dataclasses.asdict(r),
                           key=self.key, tensorflow=tf.__version__, onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""))
            trained.store(vdir, path, metrics, "facedet_metrics.json")
            self.log(f"{NAME} cached in {path}")
            return path
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def summary(m: dict) -> str:
    d = m.get("distractors", {})
    taken = ", ".join(f"{k} {v['detected']}/{v['n']}" for k, v in d.items())
    return (f"held-out AP@0.5 {m['map50']:.4f}; at score >= {m['score_threshold']}: recall {m['recall']:.4f} "
            f"({m['found']}/{m['heads']} heads), precision {m['precision']:.4f}, distractors taken for faces: "
            f"{taken or 'not measured'} (training {m['train_seconds']} s)")


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
