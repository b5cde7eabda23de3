"""Trains the zoo's tiny U-Net and FCN-8s on the generated segmentation set
(segshapes.py) with two class-imbalance remedies, and exports the better
combination into a model repository, cached outside the clone.

    python -m tfmodels.zoo.train_seg --out models   # install shapes_seg/1 (trains on a cache miss)
    python -m tfmodels.zoo.train_seg --compare      # the 4 (model x loss) trainings, a table + JSON

The exported version is cached in
${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/shapes_seg-<key>/ (its metrics
next to it in shapes_seg-<key>.json and inside it in golden/seg_metrics.json),
key = trained.cache_key over segshapes.py, shapes.py, this file, unet.py,
fcn.py, vgg16.py (FCN's backbone), common.py, layers.py, trained.py and the
TensorFlow version; --out copies it into <out>/shapes_seg/1 (trained.install:
temporary name, then rename). --compare writes its table to seg_compare-<key>.json in the same
directory and, since it trains the exported combination too, fills the
shapes_seg cache on the way (training is deterministic: seeded, TF op
determinism, so --out would train the same weights). `--retrain` ignores and
replaces cached results; `--smoke` trains a few steps only (a pipeline check,
cached under its own key).

MODELS (the zoo's topologies, built by unet.unet and fcn.fcn, unchanged, with 5 classes):
  unet    unet.unet(div=8): 8-16-32-64 channels, bottleneck 128, 'same' padding,
          transposed-conv upsampling and concatenated skips; 485,853 parameters.
  fcn8s   fcn.fcn("8s", div=8): VGG-16 widths / 8 (8 .. 64), conv6 7x7 512, conv7
          512, learned 2x upsamplings, fixed bilinear 8x; 2,103,223 parameters.
Both output "logits" [B, H, W, 5] at the input size; any input size works. With
these widths a training step costs about the same for both (about 0.11 s for 8
images on two lightly loaded cores).

LOSSES (p = softmax of the logits, g = the one-hot labels, c over the 5 classes):
  wce   class-weighted cross-entropy, median-frequency balancing (Eigen & Fergus
        2015): freq_c = (pixels of class c) / (pixels of the training images that
        contain c), w_c = median_c(freq_c) / freq_c (median over the classes
        present; a class absent from the set gets w_c = 0). The loss is the mean
        over all pixels of w_y * (-log p_y), y the pixel's class. On the 2000
        training images freq = 0.851, 0.098, 0.118, 0.056, 0.0091 and
        w = background 0.115, circle 1.000, square 0.826, triangle 1.755, dot 10.70.
  dice  soft Dice loss, V-Net form (Milletari et al. 2016):
            D_c = (2 sum p_c g_c + eps) / (sum p_c^2 + sum g_c^2 + eps),
            loss = 1 - mean_c D_c (background included),
        sums over every pixel of the batch, eps = DICE_EPS = 1 (a pixel's worth of
        smoothing: a class absent from the batch and not predicted has D_c = 1,
        and the ratio stays finite). The linear form (sum p_c + sum g_c in the
        denominator, dice_loss(..., squared=False)) collapsed here to "background
        everywhere" within about 30 steps (its mean Dice, 0.18, beats a uniform
        prediction's) and never left it (with Adam's epsilon raised to 1e-4 it
        did not collapse but reached only 0.36 mean IoU in 1000 steps); the
        squared form ranks a uniform prediction above that collapse and trains.

RECIPE (the same for every combination: RECIPE below):
  data      2000 images of segshapes.generate(2000, 96, seed 0); each sampled image
            gets one of the 8 flips/rotations by 90 degrees (the classes are
            invariant to them); pixels * 1/255, then ImageNet mean/std (as the
            zoo's segmenters declare in edgeinfer.toml).
  training  1100 steps of 8 images from He initialisation, Adam, lr 6e-3 (30
            warm-up steps, cosine decay to 2%), global-norm clipping 5; one
            tf.function step; dropout off (the nets' dropout layers are identity
            while training, as train_rcnn does for fc6/fc7). About 2 minutes on
            two cores (measured with time.time() around the step loop, in the
            metrics). The CLI defaults TF_ENABLE_ONEDNN_OPTS to 1 (oneDNN
            kernels: about 2x faster steps than TensorFlow's default on this CPU,
            still deterministic).

RESULTS of --compare (held-out IoU; run 2026-12-06 on two cores shared with
other trainings, so the seconds are up to twice an idle machine's):

    model   loss   mean IoU  background  circle  square  triangle  dot   train s
    unet    wce      0.765     0.963     0.865   0.701    0.653    0.646   182
    unet    dice     0.874     0.982     0.893   0.774    0.822    0.898   220   <- exported
    fcn8s   wce      0.677     0.939     0.818   0.742    0.572    0.313   123
    fcn8s   dice     0.775     0.969     0.875   0.792    0.715    0.522   125

A development run of an earlier state of this file recorded figures within
0.01 of these, with the same ranking.

Dice beats the weighted cross-entropy on both nets: the median-frequency
weights (dot 10.7, background 0.115) buy recall of the rare classes with false
positives around them, which IoU charges for (U-Net dot recall / precision:
wce 0.986 / 0.648, dice 0.942 / 0.945). U-Net beats FCN-8s, most on the
dot: FCN-8s predicts at stride 8 and upsamples bilinearly, too coarse for a
5-9 px disc.

EVALUATION on the same 200 held-out images (segshapes seed 1) for every run:
confusion matrix over all pixels (rows = truth, columns = argmax of the logits),
IoU_c = TP_c / (TP_c + FP_c + FN_c), mean IoU over the 5 classes (background
included), pixel accuracy. The exported version is scored through its
reloaded SavedModel.

EXPORT: the zoo's segmenter form (layers.segmenter: "images" [N, H, W, 3] float32
in, "logits" [N, H, W, 5] out, softmax = true, labels = segshapes.CLASSES,
default input 96x96, stretch, scale 1/255, ImageNet mean/std) plus
[validation] tolerance = golden_tolerance(...): 1e-5 of the largest golden
logit, since the trained logits reach several hundred.

EXTRA GOLDEN FILES (golden/input_images.npy = the first 4 held-out images,
preprocessed as edgeinfer.toml says, and the model's outputs for them):
  golden/seg_images.npy     uint8 [50, 96, 96, 3], the first 50 held-out images
  golden/seg_labels.npy     uint8 [50, 96, 96], their label maps (class index)
  golden/seg_metrics.json   the held-out metrics, recipe and training time
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

if __name__ == "__main__":
    # The CLI only (importing this module changes no environment): oneDNN's convolution kernels,
    # about twice as fast a training step on this CPU as TensorFlow's default (Eigen) ones, and
    # still deterministic. Set before TensorFlow is imported; the choice is recorded in the metrics.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import common, fcn, layers as L, trained, unet  # noqa: E402

NAME = "shapes_seg"
SIZE = 96
N_EVAL = 200
N_GOLDEN = 50
TRAIN_SEED, EVAL_SEED = 0, 1
VERSION = 1
DICE_EPS = 1.0
DICE_SQUARED = True
MODELS = ("unet", "fcn8s")
LOSSES = ("wce", "dice")
ARCHITECTURES = {"unet": "U-Net", "fcn8s": "FCN-8s (VGG-16)"}
# The exported combination: the best held-out mean IoU of the --compare run (RESULTS above; the
# run's table is in seg_compare-<key>.json next to the cache).
CHOSEN = ("unet", "dice")


@dataclasses.dataclass(frozen=True)
class Recipe:
    n_train: int = 2000  # segshapes.generate(n_train, SIZE, seed 0)
    steps: int = 1100
    batch: int = 8
    lr: float = 6e-3  # Adam peak learning rate (linear warm-up, cosine decay to 2% of it)
    warmup: int = 30
    clipnorm: float = 5.0
    dropout: bool = False  # the topologies' dropout layers active while training
    unet_div: int = 8  # width divisors: the two nets cost about the same per step
    fcn_div: int = 8
    seed: int = 0  # initialisation, batches, augmentation


RECIPE = Recipe()
# a few seconds: only checks that the pipeline runs (`--smoke`, cached under its own key)
SMOKE = Recipe(n_train=32, steps=3, batch=4, warmup=1)


def segshapes():
    return importlib.import_module("tfmodels.zoo.segshapes")


def classes() -> list[str]:
    return list(segshapes().CLASSES)


# ================================================================ data


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 as edgeinfer feeds the model: (pixel * 1/255 - mean) / std."""
    mean = np.asarray(L.IMAGENET_MEAN, np.float32)
    std = np.asarray(L.IMAGENET_STD, np.float32)
    return (images.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std


def dihedral(images: np.ndarray, labels: np.ndarray, t: np.ndarray):
    """Applies transform t[i] in 0..7 (bit 0: transpose, bit 1: flip rows, bit 2: flip columns)
    to image i ([N, H, W, C]) and label map i ([N, H, W]); H must equal W."""
    images, labels = images.copy(), labels.copy()
    for i, k in enumerate(t):
        im, lb = images[i], labels[i]
        if k & 1:
            im, lb = im.transpose(1, 0, 2), lb.T
        if k & 2:
            im, lb = im[::-1], lb[::-1]
        if k & 4:
            im, lb = im[:, ::-1], lb[:, ::-1]
        images[i], labels[i] = im, lb
    return images, labels


# ================================================================ class weights, losses, metrics


def median_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015) from label maps [N, H, W]:
    freq_c = pixels of class c / pixels of the images containing c, w_c = median(freq) / freq_c,
    the median over the classes present; absent classes get weight 0. float32 [num_classes]."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    flat = labels.reshape(n, -1).astype(np.int64)
    counts = np.stack([np.bincount(r, minlength=num_classes)[:num_classes] for r in flat])  # [N, C]
    pixels = flat.shape[1]
    class_px = counts.sum(0).astype(np.float64)
    image_px = (counts > 0).sum(0).astype(np.float64) * pixels
    present = class_px > 0
    freq = np.where(present, class_px / np.maximum(image_px, 1), 0.0)
    med = np.median(freq[present])
    return np.where(present, med / np.where(present, freq, 1.0), 0.0).astype(np.float32)


def weighted_ce(logits, labels, weights):
    """Mean over all pixels of w[y] * (-log softmax(logits)[y]); labels int [B, H, W]."""
    labels = tf.cast(labels, tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    return tf.reduce_mean(tf.gather(tf.convert_to_tensor(weights, tf.float32), labels) * ce)


def dice_loss_probs(probs, labels, eps: float = DICE_EPS, squared: bool = DICE_SQUARED):
    """1 - mean_c (2 sum p_c g_c + eps) / (sum p_c^2 + sum g_c^2 + eps) (squared, V-Net), or with
    sum p_c + sum g_c (squared=False); sums over all pixels of the batch; probs [B, H, W, C] (rows
    sum to 1), labels int [B, H, W]."""
    probs = tf.convert_to_tensor(probs, tf.float32)
    g = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(probs)[-1], dtype=tf.float32)
    axes = tf.range(tf.rank(probs) - 1)
    inter = tf.reduce_sum(probs * g, axis=axes)
    total = tf.reduce_sum(probs * probs if squared else probs, axis=axes) + tf.reduce_sum(g, axis=axes)
    return 1.0 - tf.reduce_mean((2.0 * inter + eps) / (total + eps))


def dice_loss(logits, labels, eps: float = DICE_EPS, squared: bool = DICE_SQUARED):
    return dice_loss_probs(tf.nn.softmax(logits, axis=-1), labels, eps, squared)


def confusion_matrix(truth, pred, num_classes: int) -> np.ndarray:
    """int64 [C, C]: entry (t, p) counts the pixels of true class t predicted as p."""
    t = np.asarray(truth, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """IoU_c = TP / (TP + FP + FN) per class (nan for a class neither present nor predicted)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def metrics_from_confusion(cm: np.ndarray, names) -> dict:
    iou = iou_from_confusion(cm)
    return {
        "mean_iou": round(float(np.nanmean(iou)), 4),
        "iou": {n: round(float(v), 4) for n, v in zip(names, iou)},
        "pixel_accuracy": round(float(np.trace(cm) / max(cm.sum(), 1)), 4),
        "confusion": cm.astype(int).tolist(),
    }


def predict(fn, images: np.ndarray, batch: int = 50) -> np.ndarray:
    """Argmax class maps uint8 [N, H, W] of fn(float32 images) -> logits."""
    out = []
    for i in range(0, len(images), batch):
        logits = fn(tf.constant(preprocess(images[i:i + batch])))
        out.append(np.argmax(np.asarray(logits), axis=-1).astype(np.uint8))
    return np.concatenate(out)


def evaluate(fn, images, labels) -> dict:
    pred = predict(fn, images)
    return metrics_from_confusion(confusion_matrix(labels, pred, len(classes())), classes())


# ================================================================ models and training


def build_model(kind: str, recipe: Recipe = RECIPE) -> keras.Model:
    keras.utils.set_random_seed(recipe.seed)
    n = len(classes())
    if kind == "unet":
        return unet.unet(recipe.unet_div, n, name="unet")
    if kind == "fcn8s":
        return fcn.fcn("8s", recipe.fcn_div, n, name="fcn8s")
    raise ValueError(f"unknown model {kind!r}; want one of {MODELS}")


class Trainer:
    """The optimiser and one tf.function training step of a model under a loss."""

    def __init__(self, model, loss: str, recipe: Recipe, class_weights):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; want one of {LOSSES}")
        self.model, self.loss, self.recipe = model, loss, recipe
        self.weights = tf.constant(np.asarray(class_weights, np.float32))
        self.kvars = model.trainable_variables
        self.vars = [v.value for v in self.kvars]
        self.opt = trained.adam(self.kvars, recipe.steps, recipe.lr, recipe.warmup, recipe.clipnorm)
        self.step = tf.function(self._step)

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=self.recipe.dropout)
            if self.loss == "wce":
                loss = weighted_ce(logits, y, self.weights)
            else:
                loss = dice_loss(logits, y)
        grads = tape.gradient(loss, self.vars)
        self.opt.apply_gradients(zip(grads, self.kvars))
        return loss


def train(model, loss: str, recipe: Recipe, images, labels, class_weights, log=print, hook=None) -> float:
    """Trains model in place; returns the training seconds (time.time() around the step loop).
    hook(step) is called at every log line (not timed)."""
    tr = Trainer(model, loss, recipe, class_weights)
    rng = np.random.default_rng(recipe.seed)
    t0 = time.time()
    paused = 0.0
    run, every = 0.0, 50
    for step in range(recipe.steps):
        idx = np.sort(rng.choice(len(images), recipe.batch, replace=False))
        im, lb = dihedral(images[idx], labels[idx], rng.integers(0, 8, recipe.batch))
        v = float(tr.step(tf.constant(preprocess(im)), tf.constant(lb.astype(np.int32))))
        run += v
        if step == 0 or (step + 1) % every == 0:
            n = 1 if step == 0 else every
            log(f"  step {step + 1:4d}/{recipe.steps} {loss} {run / n:.4f}  {time.time() - t0 - paused:.0f}s")
            run = 0.0
            if hook is not None:
                t1 = time.time()
                hook(step + 1)
                paused += time.time() - t1
    return time.time() - t0 - paused


# ================================================================ cache, export, CLI


def cache_key() -> str:
    files = [segshapes().__file__] + trained.zoo_files(
        "shapes.py", "train_seg.py", "unet.py", "fcn.py", "vgg16.py", "common.py", "layers.py", "trained.py")
    return trained.cache_key(files, tf.__version__)


def exportable(model, kind: str, ev_images, ev_labels) -> common.Exportable:
    m = L.segmenter(NAME, ARCHITECTURES[kind], "tiny", model, SIZE, classes())
    x = preprocess(ev_images[:4])
    m.golden_inputs = lambda rng: {"images": x}
    m.extra_files = {"golden/seg_images.npy": np.ascontiguousarray(ev_images[:N_GOLDEN]),
                     "golden/seg_labels.npy": np.ascontiguousarray(ev_labels[:N_GOLDEN])}
    return m


def golden_tolerance(outputs: np.ndarray) -> float:
    """validation.tolerance for edgeinfer.toml: 1e-5 of the largest |golden output|, rounded up to
    one significant digit, at least the Go check's default 1e-4.

    The Dice-trained logits reach several hundred (a saturated softmax), where float32 values are
    6e-5 apart: TensorFlow's Eigen and oneDNN kernels (or thread counts) then differ by more than
    the absolute 1e-4 the Go check holds outputs to by default (2e-4 measured here, 4e-7 of the
    largest logit). The argmax, all the segment task uses, is unaffected."""
    t = max(1e-4, 1e-5 * float(np.max(np.abs(outputs))))
    e = math.floor(math.log10(t))
    return float(f"{math.ceil(round(t / 10.0 ** e, 9)) * 10.0 ** e:.1g}")


def export_version(model, kind: str, ev_images, ev_labels, out_dir: str) -> str:
    """common.export of the trained model (golden files included) into out_dir/shapes_seg/1, with
    [validation] tolerance = golden_tolerance(golden output); returns the version directory."""
    m = exportable(model, kind, ev_images, ev_labels)
    vdir = common.export(m, out_dir, version=VERSION)
    tol = golden_tolerance(np.load(os.path.join(vdir, "golden", "output_logits.npy")))
    m.spec["validation"] = {"tolerance": tol}
    with open(os.path.join(vdir, "edgeinfer.toml"), "w") as f:
        f.write(common.to_toml(m.spec))
    return vdir


class Session:
    """The data, the cache and the trainings of one CLI run."""

    def __init__(self, recipe: Recipe = RECIPE, log=print):
        self.recipe = recipe
        self.log = log
        self.key = cache_key() + ("" if recipe == RECIPE else "-" + hashlib.sha256(repr(recipe).encode()).hexdigest()[:8])
        self.root = trained.cache_root()
        self._train = self._eval = self._weights = None

    def cached(self) -> str:
        return os.path.join(self.root, f"{NAME}-{self.key}")

    def compare_path(self) -> str:
        return os.path.join(self.root, f"seg_compare-{self.key}.json")

    def train_data(self):
        if self._train is None:
            t0 = time.time()
            self._train = segshapes().generate(self.recipe.n_train, SIZE, TRAIN_SEED)
            self._weights = median_frequency_weights(self._train[1], len(classes()))
            self.gen_seconds = round(time.time() - t0, 1)
            self.log(f"generated {self.recipe.n_train} training images in {self.gen_seconds}s; class weights "
                     + " ".join(f"{c} {w:.3f}" for c, w in zip(classes(), self._weights)))
        return self._train

    def eval_data(self):
        if self._eval is None:
            self._eval = segshapes().generate(N_EVAL, SIZE, EVAL_SEED)
        return self._eval

    def run(self, kind: str, loss: str):
        """Builds and trains one combination; returns (model, metrics on the held-out set)."""
        tf.config.experimental.enable_op_determinism()
        images, labels = self.train_data()
        model = build_model(kind, self.recipe)
        self.log(f"{kind} + {loss}: {model.count_params()} parameters, {self.recipe}")
        seconds = train(model, loss, self.recipe, images, labels, self._weights, self.log)
        ev_images, ev_labels = self.eval_data()
        m = evaluate(lambda x: model(x, training=False), ev_images, ev_labels)
        m.update(model=kind, loss=loss, train_seconds=round(seconds, 1), params=int(model.count_params()))
        self.log(f"{kind} + {loss}: mean IoU {m['mean_iou']:.4f} " + json.dumps(m["iou"]) + f" in {seconds:.1f}s")
        return model, m

    def export_and_cache(self, model, kind: str, loss: str, train_metrics: dict) -> str:
        ev_images, ev_labels = self.eval_data()
        os.makedirs(self.root, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{NAME}-", dir=self.root)
        try:
            vdir = export_version(model, kind, ev_images, ev_labels, stage)
            fn = tf.saved_model.load(vdir).signatures[common.SIGNATURE]
            metrics = evaluate(lambda x: fn(images=x)["logits"], ev_images, ev_labels)
            metrics.update(
                model=kind, loss=loss, classes=classes(), n_eval=N_EVAL, eval_seed=EVAL_SEED, size=SIZE,
                train_seconds=train_metrics["train_seconds"], data_seconds=self.gen_seconds,
                class_weights=[round(float(w), 4) for w in self._weights], dice_eps=DICE_EPS,
                recipe=dataclasses.asdict(self.recipe), key=self.key, tensorflow=tf.__version__,
                onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""))
            if metrics["mean_iou"] != train_metrics["mean_iou"]:
                self.log(f"note: SavedModel mean IoU {metrics['mean_iou']} vs Keras {train_metrics['mean_iou']}")
            path = trained.store(vdir, self.cached(), metrics, "seg_metrics.json")
            self.log(f"{NAME} ({kind} + {loss}) cached in {path}")
            return path
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def make(self) -> str:
        """The cached version directory of the chosen combination, training it on a miss."""
        if not os.path.isdir(self.cached()):
            kind, loss = CHOSEN
            model, m = self.run(kind, loss)
            self.export_and_cache(model, kind, loss, m)
        return self.cached()

    def compare(self) -> dict:
        """Trains the 4 combinations (the chosen one is exported and cached on the way)."""
        rows = []
        for kind in MODELS:
            for loss in LOSSES:
                model, m = self.run(kind, loss)
                rows.append(m)
                if (kind, loss) == CHOSEN and not os.path.isdir(self.cached()):
                    self.export_and_cache(model, kind, loss, m)
        best = max(rows, key=lambda r: r["mean_iou"])
        if (best["model"], best["loss"]) != CHOSEN:
            self.log(f"note: the best mean IoU is {best['model']} + {best['loss']}, CHOSEN is {CHOSEN}")
        res = {"recipe": dataclasses.asdict(self.recipe), "classes": classes(), "n_eval": N_EVAL,
               "eval_seed": EVAL_SEED, "size": SIZE, "chosen": list(CHOSEN), "key": self.key,
               "tensorflow": tf.__version__, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
               "data_seconds": self.gen_seconds, "runs": rows}
        os.makedirs(self.root, exist_ok=True)
        tmp = self.compare_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, self.compare_path())
        return res


def table(res: dict) -> str:
    names = res["classes"]
    head = f"{'model':6s} {'loss':4s} {'mIoU':>6s} " + " ".join(f"{n:>10s}" for n in names) + f" {'train s':>7s}"
    lines = [head]
    for r in res["runs"]:
        lines.append(f"{r['model']:6s} {r['loss']:4s} {r['mean_iou']:6.3f} "
                     + " ".join(f"{r['iou'][n]:10.3f}" for n in names) + f" {r['train_seconds']:7.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="install the chosen trained version into OUT/shapes_seg/1")
    ap.add_argument("--compare", action="store_true", help="train the 4 (model x loss) combinations, print a table")
    ap.add_argument("--retrain", action="store_true", help="ignore (and replace) cached results")
    ap.add_argument("--smoke", action="store_true", help="a few training steps only (pipeline check; own cache key)")
    args = ap.parse_args(argv)
    if args.out is None and not args.compare:
        args.out = "models"
    t0 = time.time()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    s = Session(SMOKE if args.smoke else RECIPE, log)
    if args.retrain:
        shutil.rmtree(s.cached(), ignore_errors=True)
    if args.compare:
        if os.path.exists(s.compare_path()) and not args.retrain:
            with open(s.compare_path()) as f:
                res = json.load(f)
            log(f"cached: {s.compare_path()}")
        else:
            res = s.compare()
        log(f"held-out {N_EVAL} images (seed {EVAL_SEED}), per-class IoU:\n" + table(res))
        log(f"chosen: {' + '.join(res['chosen'])} -> {s.compare_path()}")
    if args.out is not None:
        src = s.make()
        with open(src + ".json") as f:
            m = json.load(f)
        log(f"{NAME} ({m['model']} + {m['loss']}): held-out mean IoU {m['mean_iou']:.4f} "
            + json.dumps(m["iou"]) + f" (training {m['train_seconds']} s)")
        log(f"{NAME} -> {trained.install(src, args.out, NAME, VERSION)} (cache {src})")
    log(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
