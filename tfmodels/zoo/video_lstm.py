"""Video classification with a frozen CNN and an LSTM, after LRCN (Donahue et al. 2015,
"Long-term recurrent convolutional networks for visual recognition and description").

    frames [B, N, H, W, 3], lengths [B] (valid frames per clip; frames at t >= length are padding)
    -> padding frames zeroed (their content can never reach the output)
    -> per frame: FROZEN CNN (ResNet-50 convolutional trunk from resnet50.py, trainable=False)
       + global average pooling -> one feature vector per frame
    -> LSTM over the N feature vectors, masked with t < length, so a short clip's state stops at
       its last valid frame
    -> dense logits (softmax not applied)

Deviations from LRCN: the frame encoder is a ResNet-50 trunk instead of CaffeNet's conv1..fc6
(it is frozen, as in LRCN's feature-extraction setting), and the clip is classified from the
LSTM state at the last valid frame instead of averaging per-frame predictions.

Full: 16 frames of 224x224, ResNet-50 (2048-d features), LSTM 256, the 101 UCF-101 classes.
Tiny: 8 frames of 32x32, trunk channels / 16 (128-d features), LSTM 32, the first 10 UCF-101
classes. The frozen trunk's BN statistics come from one calibration batch (random weights).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common, layers as L
from tfmodels.zoo.resnet50 import resnet50_trunk


class FrameMask(keras.layers.Layer):
    """lengths [B] -> bool mask [B, N], True for the valid frames t < length."""

    def __init__(self, frames, **kw):
        super().__init__(**kw)
        self.frames = frames

    def call(self, lengths):
        return tf.sequence_mask(lengths, self.frames)

    def compute_output_shape(self, shape):
        return (shape[0], self.frames)

    def compute_output_spec(self, lengths):
        return keras.KerasTensor((lengths.shape[0], self.frames), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


class ZeroPadFrames(keras.layers.Layer):
    """frames [B, N, H, W, C] with the frames where valid [B, N] is False replaced by zeros."""

    def call(self, frames, valid):
        m = tf.reshape(valid, tf.concat([tf.shape(valid), [1, 1, 1]], axis=0))
        return tf.where(m, frames, tf.zeros_like(frames))

    def compute_output_shape(self, frames_shape, valid_shape):
        return frames_shape


class MergeTime(keras.layers.Layer):
    """[B, N, ...] -> [B * N, ...]: every frame becomes one image of a batch."""

    def call(self, x):
        s = tf.shape(x)
        return tf.reshape(x, tf.concat([[s[0] * s[1]], s[2:]], axis=0))

    def compute_output_shape(self, shape):
        b = None if shape[0] is None or shape[1] is None else shape[0] * shape[1]
        return (b,) + tuple(shape[2:])


class SplitTime(keras.layers.Layer):
    """[B * N, F] -> [B, N, F] (inverse of MergeTime for per-frame vectors)."""

    def __init__(self, frames, **kw):
        super().__init__(**kw)
        self.frames = frames

    def call(self, x):
        return tf.reshape(x, [-1, self.frames, tf.shape(x)[-1]])

    def compute_output_shape(self, shape):
        return (None, self.frames, shape[-1])

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


def video_lstm(frames=16, size=224, div=1, units=256, classes=101, calib_seed=1, name="video_lstm") -> keras.Model:
    cnn = resnet50_trunk(size, div, name="frame_cnn")
    calib = np.random.default_rng(calib_seed).random((4, size, size, 3), dtype=np.float64).astype(np.float32)
    L.calibrate_batchnorm(cnn, calib)
    cnn.trainable = False  # frozen feature extractor

    x = keras.Input((frames, size, size, 3), name="frames")
    lengths = keras.Input((), dtype="int32", name="lengths")
    mask = FrameMask(frames, name="frame_mask")(lengths)
    h = ZeroPadFrames(name="zero_padding_frames")(x, mask)
    # Per-frame features: the frozen CNN on all B*N frames as one batch, then back to [B, N, F].
    # (Explicit reshapes instead of keras.layers.TimeDistributed, whose vectorized_map takes
    # ~10 s to trace and builds a much larger graph.)
    h = MergeTime(name="merge_time")(h)
    h = cnn(h)
    h = SplitTime(frames, name="frame_features")(h)
    h = keras.layers.LSTM(units, name="lstm")(h, mask=mask)
    y = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model({"frames": x, "lengths": lengths}, y, name=name)


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    if variant == "full":
        n, size, div, units, labels = 16, 224, 1, 256, L.UCF101_LABELS
    else:
        n, size, div, units, labels = 8, 32, 16, 32, L.UCF101_LABELS[:10]
    model = video_lstm(n, size, div, units, len(labels))

    def fn(frames, lengths):
        return {"logits": model({"frames": frames, "lengths": lengths}, training=False)}

    serve = common.make_serve(
        fn,
        {
            "frames": tf.TensorSpec([None, n, size, size, 3], tf.float32),
            "lengths": tf.TensorSpec([None], tf.int32),
        },
    )

    def golden(rng: np.random.Generator):
        # A full clip and a short one (5 of n frames) whose padding frames hold noise.
        frames = rng.random((2, n, size, size, 3), dtype=np.float64).astype(np.float32)
        return {"frames": frames, "lengths": np.array([n, min(5, n - 1)], dtype=np.int32)}

    inp = L.image_input("frames", size, size, 3)
    inp["frames"] = n
    inp["lengths_key"] = "lengths"
    spec = L.spec(
        "video", "LRCN-style CNN+LSTM (frozen ResNet-50 trunk)", variant, inp, {"logits": "logits", "softmax": True}, labels
    )
    return common.Exportable(name="video_lstm", keras_model=model, serve=serve, spec=spec, golden_inputs=golden)
