"""Trains the video model (a per-frame CNN + an LSTM over sampled frames, after LRCN) on the
generated clips (clips.py) and exports it with three signatures, so that a plugin can run the
CNN once per frame and the LSTM on clips of cached features; cached outside the clone.

    python -m tfmodels.zoo.train_video --out models   # install clips_video/1 (trains on a cache miss)

The exported version is cached in
${XDG_CACHE_HOME:-~/.cache}/edgeinfer/trained/clips_video-<key>/ (its metrics next to it in
clips_video-<key>.json and inside it in golden/video_metrics.json), key = the first 16 hex digits
of a sha256 over clips.py, shapes.py, this file, video_lstm.py (its mask and reshape layers),
train_seg.py (preprocessing, golden tolerance), common.py, layers.py, trained.py and the
TensorFlow version (trained.cache_key); --out copies it into <out>/clips_video/1
(trained.install: temporary name, then rename). `--retrain` ignores and replaces
the cached version; `--smoke` trains a few steps only (a pipeline check, cached under its own key).

MODEL (N = FRAMES = 8 sampled frames of 48x48x3, D = FEATURES = 36, 6 classes):
  frame CNN  images [B, 48, 48, 3] -> CoordChannels (appends x and y, -1..1 across the image)
             -> conv 3x3 16 -> conv 3x3/2 32 -> conv 3x3 32 (24x24) -> conv 1x1 12 maps a_k
             (ReLU after every conv) -> MomentPool: the global averages of a_k, a_k * x and
             a_k * y -> features [B, 36]
  clip head  features f [B, N, D], lengths [B] -> d_t = f_t - f_(t-1) for valid t, t-1 (else 0),
             batch-normalised -> [f_t, d_t] -> LSTM 64, masked with t < length (a short clip's
             state stops at its last valid frame) -> dense logits [B, 6]
  whole      frames [B, N, 48, 48, 3], lengths [B] -> the CNN on all B*N frames -> the head
The classes are about motion, and global average pooling of plain convolution features keeps
what is in a frame but not where. What was tried (the same data and sampling, 300 steps):
  CoordConv (x, y channels appended to the input and before the last conv), average pooling,
  the LSTM on the features: the loss stayed at ln 6 (also with the features batch-normalised;
  likely because a small shape's motion changes the averages by little next to how much the
  backgrounds change them from clip to clip);
  + the LSTM also reads the batch-normalised frame-to-frame differences: 0.29 held-out (even8);
  + first moments pooled next to the averages (MomentPool): 0.97 held-out.
A map a_k weighted by x and by y says where what the map responds to is, so the shape's
position and area are linear in the features; the differences put its motion on the scale of
the rest. A small stride-2 net instead of video_lstm's ResNet-50 trunk (stride 32: a 2x2 map at
48 px) keeps positions precise. 50,626 parameters (CNN 15,020). CNN and head are trained
together, end to end; at serving time the CNN is frozen (cnn.trainable = False in the export)
and only computes per-frame features, so a plugin runs it once per frame and keeps the vectors
in a ring buffer.

SAMPLING: a clip of clips.FRAMES = 24 frames gives the model L <= N frames (frames t >= L are
padding: any content, masked) in the ways the plugin samples its ring buffer of features:
  even   N frames evenly spread over a window (training: a random window of N..24 frames;
         evaluation: the whole clip, frames 0, 3, 7, 10, 13, 16, 20, 23)
  rate   N frames at a fixed stride k (1, 2 or 3 frames) from a random start
  short  L < N frames (3..7 in training) evenly over a window or at a stride, padded to N
Training draws even / rate / short with probabilities 0.4 / 0.35 / 0.25 (sample()).

RECIPE (RECIPE below):
  data      1500 clips of clips.generate(1500, seed 0); each sampled clip gets one of the 8
            flips/rotations by 90 degrees and, with probability 1/2, its frame order reversed,
            the label mapped to match (a horizontal flip swaps left and right, a transpose left
            and up, reversal swaps left/right, up/down and grow/shrink); padding frames hold
            uniform noise; pixels * 1/255, then ImageNet mean/std (as the zoo declares).
  training  1000 steps of 16 clips (128 frames through the CNN), convolutions from He
            initialisation (LSTM and dense: Keras defaults), softmax cross-entropy, Adam, lr 3e-3
            (30 warm-up steps, cosine decay to 2%), global-norm clipping 5; one tf.function step.
            105 s on two cores, 212 s with other jobs on them (time.time() around the step
            loop; each run's figure is in the metrics), under `nice -n 10`.
  The CLI defaults TF_ENABLE_ONEDNN_OPTS to 1 (as train_seg.py) and enables TF op determinism.

RESULTS on 300 held-out clips (clips seed 1, 50 per class; the exported SavedModel's
serving_default, padding frames filled with noise); frames taken from each 24-frame clip:

    sampling      frames                            accuracy  left  right  up    down  grow  shrink
    even8         0 3 7 10 13 16 20 23 (N evenly)    1.000    1.00  1.00  1.00  1.00  1.00  1.00
    rate1         8..15 (stride 1)                   0.973    0.96  1.00  1.00  0.94  1.00  0.94
    rate2         4 6 .. 18 (stride 2)               0.990    1.00  1.00  1.00  1.00  0.98  0.96
    rate3         1 4 .. 22 (stride 3)               1.000    1.00  1.00  1.00  1.00  1.00  1.00
    short6_even   0 5 9 14 18 23 (6 valid of 8)      1.000    1.00  1.00  1.00  1.00  1.00  1.00
    short4_even   0 8 15 23                          1.000    1.00  1.00  1.00  1.00  1.00  1.00
    short5_rate3  5 8 11 14 17                       0.987    1.00  0.98  1.00  0.98  0.98  0.98
    short4_rate2  8 10 12 14                         0.983    1.00  1.00  1.00  0.98  0.98  0.94
    short3_rate1  10 11 12                           0.873    0.88  0.92  0.80  0.88  0.92  0.84

The errors come with short time spans: 8 consecutive frames cover 4-9 px of motion, 3 of
them 1.2-2.6 px, where the frame noise and the raster's pixel steps weigh most. The metrics
(per sampling: frame indices, accuracy, per class) are in golden/video_metrics.json.

EXPORT (one SavedModel, version 1, three signatures; names in the module constants):
  serving_default  frames float32 [B, 8, 48, 48, 3], lengths int32 [B] -> logits [B, 6]
  features         images float32 [B, 48, 48, 3] -> features float32 [B, 36]
  clip             features float32 [B, 8, 36], lengths int32 [B] -> logits [B, 6]
serving_default runs the same layers as clip(features(frames)) in one graph (equal within 1e-5,
tested on the export).
edgeinfer.toml: task "video", labels clips.CLASSES, input key "frames", 48x48x3, stretch,
scale 1/255, ImageNet mean/std, frames = 8, lengths_key = "lengths", output logits (softmax =
true), [validation] tolerance = train_seg.golden_tolerance(golden logits), and a [video] table
naming the features and clip signatures and their keys (features_signature = "features",
features_input = "images", features_output = "features", clip_signature = "clip",
clip_features = "features", clip_lengths = "lengths", clip_logits = "logits"), which the video
plugin (plugins/video) requires: it runs the CNN once per frame and the head on cached features.

GOLDEN FILES (held-out clips, preprocessed as edgeinfer.toml says):
  golden/input_frames.npy, input_lengths.npy -> output_logits.npy   serving_default on 4 clips:
      2 full (even sampling), lengths 5 and 3 with noise in the padding frames
  golden/features_input_images.npy -> features_output_features.npy  features of those 32 frames
  golden/clip_input_features.npy, clip_input_lengths.npy -> clip_output_logits.npy
      the clip signature on those features [4, 8, 36] (its logits equal output_logits.npy)
  golden/signatures.json   the three signatures as TensorFlow's protobuf reads them
  golden/video_metrics.json   the held-out metrics, recipe and training time
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
    # The CLI only (importing this module changes no environment): oneDNN kernels, as train_seg.py.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import clips, common, layers as L, train_seg, trained  # noqa: E402
from tfmodels.zoo.video_lstm import FrameMask, MergeTime, SplitTime  # noqa: E402

NAME = "clips_video"
VERSION = 1
SIZE = clips.SIZE  # frame side
FRAMES = 8  # N: frames per sampled clip (edgeinfer.toml input.frames)
FEATURES = 36  # D: length of a frame's feature vector
UNITS = 64  # LSTM units
N_EVAL = 300
TRAIN_SEED, EVAL_SEED = clips.TRAIN_SEED, clips.HELDOUT_SEED

# Signature names and keys. serving_default is the whole model (the manifest's signature);
# FEATURES_SIGNATURE runs the CNN on single frames, CLIP_SIGNATURE the LSTM on cached features.
FRAMES_KEY, LENGTHS_KEY, LOGITS_KEY = "frames", "lengths", "logits"
FEATURES_SIGNATURE = "features"  # images [B, H, W, 3] -> features [B, D]
FEATURES_INPUT, FEATURES_OUTPUT = "images", "features"
CLIP_SIGNATURE = "clip"  # features [B, N, D], lengths [B] -> logits [B, 6]
CLIP_INPUT = "features"
# golden/<prefix>input_<key>.npy -> golden/<prefix>output_<key>.npy for each signature
GOLDEN_PREFIX = {common.SIGNATURE: "", FEATURES_SIGNATURE: "features_", CLIP_SIGNATURE: "clip_"}

SAMPLINGS = ("even", "rate", "short")
SAMPLING_P = (0.4, 0.35, 0.25)
MAX_STRIDE = 3
MIN_SHORT = 3


@dataclasses.dataclass(frozen=True)
class Recipe:
    n_train: int = 1500  # clips.generate(n_train, seed 0)
    steps: int = 1000
    batch: int = 16  # clips per step (batch * FRAMES frames through the CNN)
    lr: float = 3e-3  # Adam peak learning rate (linear warm-up, cosine decay to 2% of it)
    warmup: int = 30
    clipnorm: float = 5.0
    seed: int = 0  # initialisation, batches, sampling, augmentation


RECIPE = Recipe()
# a few seconds: only checks that the pipeline runs (`--smoke`, cached under its own key)
SMOKE = Recipe(n_train=12, steps=3, batch=4, warmup=1)


# ================================================================ model


class CoordChannels(keras.layers.Layer):
    """[B, H, W, C] -> [B, H, W, C + 2]: appends x and y, each from -1 to 1 across the image
    (pixel centres), so convolutions and pooled features can depend on position (CoordConv)."""

    def call(self, x):
        s = tf.shape(x)
        h, w = s[1], s[2]
        ys = (tf.cast(tf.range(h), x.dtype) + 0.5) / tf.cast(h, x.dtype) * 2.0 - 1.0
        xs = (tf.cast(tf.range(w), x.dtype) + 0.5) / tf.cast(w, x.dtype) * 2.0 - 1.0
        yy, xx = tf.meshgrid(ys, xs, indexing="ij")
        grid = tf.tile(tf.stack([xx, yy], axis=-1)[None], [s[0], 1, 1, 1])
        return tf.concat([x, grid], axis=-1)

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] + 2,)


class MomentPool(keras.layers.Layer):
    """[B, H, W, K] -> [B, 3K]: per channel a, the global averages of a, a * x and a * y (x, y
    from -1 to 1 across the image): the mass of each map and its first moments, so a pooled
    feature moves with what the map responds to."""

    def call(self, a):
        s = tf.shape(a)
        ys = (tf.cast(tf.range(s[1]), a.dtype) + 0.5) / tf.cast(s[1], a.dtype) * 2.0 - 1.0
        xs = (tf.cast(tf.range(s[2]), a.dtype) + 0.5) / tf.cast(s[2], a.dtype) * 2.0 - 1.0
        mass = tf.reduce_mean(a, axis=[1, 2])
        mx = tf.reduce_mean(a * xs[None, None, :, None], axis=[1, 2])
        my = tf.reduce_mean(a * ys[None, :, None, None], axis=[1, 2])
        return tf.concat([mass, mx, my], axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], 3 * shape[-1])


def frame_cnn(size: int = SIZE, dim: int = FEATURES) -> keras.Model:
    """images [B, size, size, 3] -> features [B, dim] (see MODEL in the module docstring)."""
    if dim % 3:
        raise ValueError(f"features {dim} must be a multiple of 3 (mass, x and y moment per map)")
    x = keras.Input((size, size, 3), name=FEATURES_INPUT)
    conv = lambda n, k, s, name: keras.layers.Conv2D(  # noqa: E731
        n, k, strides=s, padding="same", activation="relu", kernel_initializer=L.he(), name=name)
    h = CoordChannels(name="coords")(x)
    h = conv(16, 3, 1, "conv1")(h)
    h = conv(32, 3, 2, "conv2")(h)
    h = conv(32, 3, 1, "conv3")(h)
    h = conv(dim // 3, 1, 1, "maps")(h)
    h = MomentPool(name="moment_pool")(h)
    return keras.Model(x, h, name="frame_cnn")


class FrameDiff(keras.layers.Layer):
    """features [B, N, D], valid [B, N] -> [B, N, D]: f_t - f_(t-1) where frames t and t-1 are
    valid, 0 elsewhere (the first frame, the padding)."""

    def call(self, f, valid):
        d = f[:, 1:] - f[:, :-1]
        both = tf.logical_and(valid[:, 1:], valid[:, :-1])[..., None]
        d = tf.where(both, d, tf.zeros_like(d))
        return tf.concat([tf.zeros_like(f[:, :1]), d], axis=1)

    def compute_output_shape(self, f_shape, valid_shape):
        return f_shape


def clip_head(frames: int = FRAMES, dim: int = FEATURES, units: int = UNITS, classes: int = len(clips.CLASSES)) -> keras.Model:
    """{features [B, frames, dim], lengths [B]} -> logits [B, classes]; frames t >= length are ignored."""
    f = keras.Input((frames, dim), name=CLIP_INPUT)
    lengths = keras.Input((), dtype="int32", name=LENGTHS_KEY)
    mask = FrameMask(frames, name="frame_mask")(lengths)
    d = keras.layers.BatchNormalization(name="diff_bn")(FrameDiff(name="frame_diff")(f, mask))
    h = keras.layers.Concatenate(name="features_and_diffs")([f, d])
    h = keras.layers.LSTM(units, name="lstm")(h, mask=mask)
    y = keras.layers.Dense(classes, name=LOGITS_KEY)(h)
    return keras.Model({CLIP_INPUT: f, LENGTHS_KEY: lengths}, y, name="clip_head")


@dataclasses.dataclass
class VideoModel:
    """The frame CNN, the clip head and the whole model made of the two (shared weights)."""

    cnn: keras.Model
    head: keras.Model
    full: keras.Model


def build_model(recipe: Recipe = RECIPE) -> VideoModel:
    keras.utils.set_random_seed(recipe.seed)
    cnn, head = frame_cnn(), clip_head()
    x = keras.Input((FRAMES, SIZE, SIZE, 3), name=FRAMES_KEY)
    lengths = keras.Input((), dtype="int32", name=LENGTHS_KEY)
    f = SplitTime(FRAMES, name="frame_features")(cnn(MergeTime(name="merge_time")(x)))
    y = head({CLIP_INPUT: f, LENGTHS_KEY: lengths})
    return VideoModel(cnn, head, keras.Model({FRAMES_KEY: x, LENGTHS_KEY: lengths}, y, name=NAME))


# ================================================================ data: sampling, augmentation


def preprocess(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 as edgeinfer feeds the model: (pixel * 1/255 - mean) / std."""
    return train_seg.preprocess(frames)


def sample(rng: np.random.Generator, mode: str, total: int = clips.FRAMES, n: int = FRAMES) -> np.ndarray:
    """Frame indices (increasing, into a clip of total frames) of one training sample: n of them
    for "even" and "rate", MIN_SHORT..n-1 for "short" (see SAMPLING in the module docstring)."""
    if mode == "short":
        n = int(rng.integers(MIN_SHORT, n))
        mode = "even" if rng.random() < 0.5 else "rate"
    if mode == "even":
        w = int(rng.integers(n, total + 1))
        a = int(rng.integers(0, total - w + 1))
        return a + np.rint(np.linspace(0, w - 1, n)).astype(np.int64)
    if mode == "rate":
        k = int(rng.integers(1, min(MAX_STRIDE, (total - 1) // max(n - 1, 1)) + 1))
        a = int(rng.integers(0, total - (n - 1) * k))
        return a + k * np.arange(n)
    raise ValueError(f"unknown sampling {mode!r}; want one of {SAMPLINGS}")


def evenly(total: int, n: int) -> np.ndarray:
    """n frame indices evenly spread over 0..total-1 (first and last included)."""
    return np.rint(np.linspace(0, total - 1, n)).astype(np.int64)


def strided(total: int, n: int, k: int) -> np.ndarray:
    """n frames at stride k, centred in the clip."""
    a = (total - 1 - (n - 1) * k) // 2
    return a + k * np.arange(n)


# The held-out evaluations: name -> frame indices taken from every 24-frame clip.
EVAL_SAMPLINGS = {
    "even8": evenly(clips.FRAMES, FRAMES),
    "rate1": strided(clips.FRAMES, FRAMES, 1),
    "rate2": strided(clips.FRAMES, FRAMES, 2),
    "rate3": strided(clips.FRAMES, FRAMES, 3),
    "short6_even": evenly(clips.FRAMES, 6),
    "short4_even": evenly(clips.FRAMES, 4),
    "short5_rate3": strided(clips.FRAMES, 5, 3),
    "short4_rate2": strided(clips.FRAMES, 4, 2),
    "short3_rate1": strided(clips.FRAMES, 3, 1),
}

# Class permutations of the augmentations (new label = P[old label]), in CLASSES order
# left, right, up, down, grow, shrink.
TRANSPOSE = np.array([clips.UP, clips.DOWN, clips.LEFT, clips.RIGHT, clips.GROW, clips.SHRINK])
FLIP_ROWS = np.array([clips.LEFT, clips.RIGHT, clips.DOWN, clips.UP, clips.GROW, clips.SHRINK])
FLIP_COLS = np.array([clips.RIGHT, clips.LEFT, clips.UP, clips.DOWN, clips.GROW, clips.SHRINK])
REVERSE = np.array([clips.RIGHT, clips.LEFT, clips.DOWN, clips.UP, clips.SHRINK, clips.GROW])


def augment(frames: np.ndarray, label: int, t: int, reverse: bool) -> tuple[np.ndarray, int]:
    """Transform t in 0..7 (bit 0: transpose, bit 1: flip rows, bit 2: flip columns) of every
    frame of [L, H, W, C] (H == W), then the frame order reversed if reverse; the label to match."""
    if t & 1:
        frames, label = frames.transpose(0, 2, 1, 3), TRANSPOSE[label]
    if t & 2:
        frames, label = frames[:, ::-1], FLIP_ROWS[label]
    if t & 4:
        frames, label = frames[:, :, ::-1], FLIP_COLS[label]
    if reverse:
        frames, label = frames[::-1], REVERSE[label]
    return frames, int(label)


def pad(frames: np.ndarray, rng: np.random.Generator, n: int = FRAMES) -> np.ndarray:
    """[L, H, W, C] uint8 -> [n, H, W, C]: frames L..n-1 filled with uniform noise (padding)."""
    extra = rng.integers(0, 256, (n - len(frames),) + frames.shape[1:], dtype=np.uint8)
    return np.concatenate([frames, extra])


def batch(rng: np.random.Generator, data: np.ndarray, labels: np.ndarray, size: int):
    """One training batch: preprocessed frames float32 [size, N, H, W, 3], lengths int32, labels int32."""
    xs, ls, ys = [], [], []
    for i in rng.choice(len(data), size, replace=False):
        idx = sample(rng, SAMPLINGS[rng.choice(len(SAMPLINGS), p=SAMPLING_P)])
        f, y = augment(data[i][idx], labels[i], int(rng.integers(8)), bool(rng.integers(2)))
        xs.append(pad(f, rng))
        ls.append(len(idx))
        ys.append(y)
    return preprocess(np.stack(xs)), np.array(ls, np.int32), np.array(ys, np.int32)


# ================================================================ training and evaluation


def train(model: VideoModel, recipe: Recipe, data, labels, log=print) -> float:
    """Trains CNN and head together in place; returns the training seconds (time.time() around
    the step loop)."""
    full = model.full
    kvars = full.trainable_variables
    tvars = [v.value for v in kvars]
    opt = trained.adam(kvars, recipe.steps, recipe.lr, recipe.warmup, recipe.clipnorm)

    @tf.function
    def step(x, lengths, y):
        with tf.GradientTape() as tape:
            logits = full({FRAMES_KEY: x, LENGTHS_KEY: lengths}, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        opt.apply_gradients(zip(tape.gradient(loss, tvars), kvars))
        return loss, tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))

    rng = np.random.default_rng(recipe.seed)
    t0 = time.time()
    run_loss = run_acc = 0.0
    every = 50
    for i in range(recipe.steps):
        x, ln, y = batch(rng, data, labels, recipe.batch)
        loss, acc = step(tf.constant(x), tf.constant(ln), tf.constant(y))
        run_loss += float(loss)
        run_acc += float(acc)
        if i == 0 or (i + 1) % every == 0:
            n = 1 if i == 0 else every
            log(f"  step {i + 1:4d}/{recipe.steps} loss {run_loss / n:.4f} acc {run_acc / n:.3f}  {time.time() - t0:.0f}s")
            run_loss = run_acc = 0.0
    return time.time() - t0


def eval_inputs(data: np.ndarray, idx: np.ndarray, rng: np.random.Generator):
    """Every clip of data sampled at idx, padded with noise: preprocessed frames, lengths."""
    x = np.stack([pad(c[idx], rng) for c in data])
    return preprocess(x), np.full(len(data), len(idx), np.int32)


def predict(fn, x: np.ndarray, lengths: np.ndarray, batch_size: int = 50) -> np.ndarray:
    """Argmax classes int64 [B] of fn(frames, lengths) -> logits, run in batches."""
    out = [np.argmax(np.asarray(fn(tf.constant(x[i:i + batch_size]), tf.constant(lengths[i:i + batch_size]))), -1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> dict:
    """Overall and per-class accuracy (rounded to 4 digits)."""
    per = {c: round(float(np.mean(pred[labels == k] == k)), 4) for k, c in enumerate(clips.CLASSES) if np.any(labels == k)}
    return {"accuracy": round(float(np.mean(pred == labels)), 4), "per_class": per}


def evaluate(fn, data: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy under every EVAL_SAMPLINGS entry: {name: {"indices", "accuracy", "per_class"}}."""
    res = {}
    for name, idx in EVAL_SAMPLINGS.items():
        x, ln = eval_inputs(data, idx, np.random.default_rng(EVAL_SEED))
        res[name] = {"indices": idx.tolist(), **accuracy(predict(fn, x, ln), labels)}
    return res


# ================================================================ export


def serve_functions(model: VideoModel) -> dict:
    """The three signature functions, keyed by signature name."""
    full, cnn, head = model.full, model.cnn, model.head

    def whole(frames, lengths):
        return {LOGITS_KEY: full({FRAMES_KEY: frames, LENGTHS_KEY: lengths}, training=False)}

    def features(images):
        return {FEATURES_OUTPUT: cnn(images, training=False)}

    def clip(features, lengths):
        return {LOGITS_KEY: head({CLIP_INPUT: features, LENGTHS_KEY: lengths}, training=False)}

    lengths = tf.TensorSpec([None], tf.int32)
    return {
        common.SIGNATURE: common.make_serve(
            whole, {FRAMES_KEY: tf.TensorSpec([None, FRAMES, SIZE, SIZE, 3], tf.float32), LENGTHS_KEY: lengths}),
        FEATURES_SIGNATURE: common.make_serve(
            features, {FEATURES_INPUT: tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)}),
        CLIP_SIGNATURE: common.make_serve(
            clip, {CLIP_INPUT: tf.TensorSpec([None, FRAMES, FEATURES], tf.float32), LENGTHS_KEY: lengths}),
    }


def manifest(tolerance: float) -> dict:
    """edgeinfer.toml of the exported version."""
    inp = L.image_input(FRAMES_KEY, SIZE, SIZE, 3)
    inp["frames"] = FRAMES
    inp["lengths_key"] = LENGTHS_KEY
    s = L.spec("video", "LRCN-style CNN+LSTM (CoordConv frame CNN, trained on generated clips)", "tiny", inp,
               {"logits": LOGITS_KEY, "softmax": True}, clips.CLASSES)
    s["validation"] = {"tolerance": tolerance}
    s["video"] = {
        "features_signature": FEATURES_SIGNATURE, "features_input": FEATURES_INPUT, "features_output": FEATURES_OUTPUT,
        "clip_signature": CLIP_SIGNATURE, "clip_features": CLIP_INPUT, "clip_lengths": LENGTHS_KEY,
        "clip_logits": LOGITS_KEY,
    }
    return s


def golden_inputs(ev_data: np.ndarray) -> dict:
    """serving_default's golden input: held-out clips 0..3 (4 classes), 0 and 1 evenly sampled,
    2 and 3 the first 5 and 3 of those frames with noise in the padding."""
    rng = np.random.default_rng(EVAL_SEED)
    idx = EVAL_SAMPLINGS["even8"]
    lengths = np.array([FRAMES, FRAMES, 5, 3], np.int32)
    x = np.stack([pad(ev_data[i][idx[:n]], rng) for i, n in enumerate(lengths)])
    return {FRAMES_KEY: preprocess(x), LENGTHS_KEY: lengths}


def export_version(model: VideoModel, ev_data: np.ndarray, out_dir: str) -> str:
    """Saves model as <out_dir>/clips_video/1 (temporary name, then rename) with its three
    signatures, edgeinfer.toml and the golden files; returns the version directory."""
    final = os.path.join(out_dir, NAME, str(VERSION))
    tmp = os.path.join(out_dir, NAME, f".{VERSION}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.cnn.trainable = False  # served as a frozen feature extractor
    fns = serve_functions(model)
    module = tf.Module()
    # The tf.Variables under Keras 3's variables, not the Keras models (see common.export).
    module.variables_ = [v.value for v in model.full.variables]
    module.serve, module.features, module.clip = fns[common.SIGNATURE], fns[FEATURES_SIGNATURE], fns[CLIP_SIGNATURE]
    tf.saved_model.save(module, tmp, signatures=fns)

    # Golden files: the reloaded SavedModel's outputs (as common.export writes them).
    sigs = tf.saved_model.load(tmp).signatures
    inputs = {common.SIGNATURE: golden_inputs(ev_data)}
    x = inputs[common.SIGNATURE]
    inputs[FEATURES_SIGNATURE] = {FEATURES_INPUT: x[FRAMES_KEY].reshape((-1, SIZE, SIZE, 3))}
    outputs = {}
    for name in (common.SIGNATURE, FEATURES_SIGNATURE, CLIP_SIGNATURE):
        if name == CLIP_SIGNATURE:
            feats = outputs[FEATURES_SIGNATURE][FEATURES_OUTPUT].reshape((-1, FRAMES, FEATURES))
            inputs[name] = {CLIP_INPUT: feats, LENGTHS_KEY: x[LENGTHS_KEY]}
        res = sigs[name](**{k: tf.constant(v) for k, v in inputs[name].items()})
        outputs[name] = {k: v.numpy() for k, v in res.items()}
    gdir = os.path.join(tmp, "golden")
    os.makedirs(gdir)
    for name, prefix in GOLDEN_PREFIX.items():
        for kind, arrays in (("input", inputs[name]), ("output", outputs[name])):
            for k, v in arrays.items():
                np.save(os.path.join(gdir, f"{prefix}{kind}_{k}.npy"), np.ascontiguousarray(v))
    with open(os.path.join(gdir, "signatures.json"), "w") as f:
        json.dump(common.signatures_of(tmp), f, indent=1, sort_keys=True)
    tol = train_seg.golden_tolerance(outputs[common.SIGNATURE][LOGITS_KEY])
    with open(os.path.join(tmp, "edgeinfer.toml"), "w") as f:
        f.write(common.to_toml(manifest(tol)))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


# ================================================================ cache, CLI


def cache_key() -> str:
    files = ("clips.py", "shapes.py", "train_video.py", "video_lstm.py", "train_seg.py", "common.py", "layers.py",
             "trained.py")
    return trained.cache_key(trained.zoo_files(*files), tf.__version__)


class Session:
    """The data, the cache and the training of one CLI run."""

    def __init__(self, recipe: Recipe = RECIPE, log=print):
        self.recipe = recipe
        self.log = log
        self.key = cache_key() + ("" if recipe == RECIPE else "-" + hashlib.sha256(repr(recipe).encode()).hexdigest()[:8])

    def cached(self) -> str:
        return os.path.join(trained.cache_root(), f"{NAME}-{self.key}")

    def make(self) -> str:
        """The cached version directory, trained, evaluated and exported on a miss."""
        if os.path.isdir(self.cached()):
            return self.cached()
        tf.config.experimental.enable_op_determinism()
        t0 = time.time()
        data, labels = clips.generate(self.recipe.n_train, TRAIN_SEED)
        ev_data, ev_labels = clips.generate(N_EVAL, EVAL_SEED)
        data_seconds = round(time.time() - t0, 1)
        model = build_model(self.recipe)
        self.log(f"{NAME}: {model.full.count_params()} parameters (CNN {model.cnn.count_params()}), "
                 f"{self.recipe.n_train} clips in {data_seconds}s, {self.recipe}")
        seconds = train(model, self.recipe, data, labels, self.log)
        root = trained.cache_root()
        os.makedirs(root, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{NAME}-", dir=root)
        try:
            vdir = export_version(model, ev_data, stage)
            fn = tf.saved_model.load(vdir).signatures[common.SIGNATURE]
            res = evaluate(lambda x, ln: fn(frames=x, lengths=ln)[LOGITS_KEY], ev_data, ev_labels)
            metrics = {
                "samplings": res, "classes": clips.CLASSES, "n_eval": N_EVAL, "eval_seed": EVAL_SEED,
                "frames": FRAMES, "clip_frames": clips.FRAMES, "size": SIZE, "features": FEATURES,
                "params": int(model.full.count_params()), "train_seconds": round(seconds, 1),
                "data_seconds": data_seconds, "recipe": dataclasses.asdict(self.recipe), "key": self.key,
                "tensorflow": tf.__version__, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
            }
            path = trained.store(vdir, self.cached(), metrics, "video_metrics.json")
            self.log(f"{NAME} cached in {path}")
            return path
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def summary(m: dict) -> str:
    lines = [f"held-out {m['n_eval']} clips (seed {m['eval_seed']}), training {m['train_seconds']} s:"]
    for name, r in m["samplings"].items():
        lines.append(f"  {name:13s} frames {str(r['indices']):32s} acc {r['accuracy']:.4f}  "
                     + " ".join(f"{c} {a:.2f}" for c, a in r["per_class"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models", help="install the trained version into OUT/clips_video/1")
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
        log(summary(json.load(f)))
    log(f"{NAME} -> {trained.install(src, args.out, NAME, VERSION)} (cache {src})")
    log(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
