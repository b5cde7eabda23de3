"""An anchor-free detection head as the newer YOLO generations export it
(YOLOv8's exported graph): per feature-map cell of strides 8, 16 and 32 a
box and one score per class, concatenated over the three scales into one
tensor

    predictions: float32 [batch, 4 + C, N]   (channels_first)

where rows 0..3 are the box (cx, cy, w, h) in input pixels and rows 4.. the
class scores after a sigmoid; N = sum over strides of (size/s)^2. The box is
decoded in the graph as YOLOv8 does ("dist2bbox"): the head predicts the
distances (left, top, right, bottom) from the cell centre, here as
softplus(x) * stride (YOLOv8 takes the expectation of a distribution over
16 bins, which changes nothing for the plugin).

Backbone: a small stack of conv + BatchNorm + SiLU stages (stride 2 each);
heads: a 3x3 conv then two 1x1 convs (box, classes) per scale.

Variants: tiny 96x96, 3 classes (the plugin's anchor-free decode on a real
graph); full 640x640, 80 classes. Random weights (seeded) with calibrated
BatchNorm statistics: an architecture export, not a trained model.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfmodels.zoo import common
from tfmodels.zoo import layers as L

STRIDES = (8, 16, 32)
VARIANTS = {
    "tiny": {"size": 96, "labels": ("circle", "square", "triangle"), "width": 16},
    "full": {"size": 640, "labels": tuple(f"class{i}" for i in range(80)), "width": 64},
}


def conv(x, filters: int, kernel: int, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=name + "_bn")(x)
    return layers.Activation("silu", name=name + "_silu")(x)


def build_model(size: int, num_classes: int, width: int) -> keras.Model:
    inp = keras.Input((size, size, 3), name="images")
    x = conv(inp, width, 3, 2, "stem")            # /2
    x = conv(x, width * 2, 3, 2, "stage2")        # /4
    p3 = conv(x, width * 4, 3, 2, "stage3")       # /8
    p4 = conv(p3, width * 8, 3, 2, "stage4")      # /16
    p5 = conv(p4, width * 8, 3, 2, "stage5")      # /32
    outs = []
    for s, f in zip(STRIDES, (p3, p4, p5)):
        h = conv(f, width * 4, 3, 1, f"head_s{s}")
        dist = layers.Conv2D(4, 1, name=f"head_s{s}_box")(h)
        cls = layers.Conv2D(num_classes, 1, name=f"head_s{s}_cls")(h)
        outs.append((s, dist, cls))

    def decode(tensors):
        rows = []
        for (s, _, _), (dist, cls) in zip(outs, zip(tensors[0::2], tensors[1::2])):
            g = size // s
            ys, xs = tf.meshgrid(tf.range(g, dtype=tf.float32), tf.range(g, dtype=tf.float32), indexing="ij")
            cx, cy = (xs + 0.5) * s, (ys + 0.5) * s
            d = tf.nn.softplus(dist) * s  # left, top, right, bottom
            x1, y1 = cx - d[..., 0], cy - d[..., 1]
            x2, y2 = cx + d[..., 2], cy + d[..., 3]
            box = tf.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)
            pred = tf.concat([box, tf.sigmoid(cls)], axis=-1)  # [b, g, g, 4+C]
            rows.append(tf.reshape(pred, [-1, g * g, 4 + num_classes]))
        return tf.transpose(tf.concat(rows, axis=1), [0, 2, 1])  # [b, 4+C, N]

    flat = [t for _, dist, cls in outs for t in (dist, cls)]
    pred = layers.Lambda(decode, name="predictions")(flat)
    return keras.Model(inp, pred, name="anchorfree")


def build(variant: str = "tiny", seed: int = 0) -> common.Exportable:
    cfg = VARIANTS[variant]
    keras.utils.set_random_seed(seed)
    size, labels = cfg["size"], cfg["labels"]
    model = build_model(size, len(labels), cfg["width"])
    calib = np.random.default_rng(seed + 1).random((8, size, size, 3)).astype(np.float32)
    L.calibrate_batchnorm(model, calib)

    def fn(images):
        return {"predictions": model(images, training=False)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, size, size, 3], tf.float32)})
    spec = L.spec("detect_anchorfree", "anchor-free head (YOLOv8-style export)", variant,
                  L.image_input("images", size, size, 3, mean=[0.0] * 3, std=[1.0] * 3, resize="letterbox"),
                  {"predictions": "predictions", "layout": "channels_first", "box_units": "pixels"}, labels)
    return common.Exportable(name="anchorfree", keras_model=model, serve=serve, spec=spec)
