"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions"), Table 1.

    conv1 7x7/2 64, max pool 3x3/2, LRN
    conv2: 1x1 64 (reduce), 3x3 192, LRN, max pool 3x3/2
    inception 3a, 3b, max pool 3x3/2
    inception 4a, 4b, 4c, 4d, 4e, max pool 3x3/2
    inception 5a, 5b
    average pool (7x7 at 224 input; global average pooling here, identical at 224), dropout 40%,
    linear 1000 logits

Each of the 9 inception modules has 4 parallel branches, concatenated along channels:
    b1: 1x1                      (#1x1)
    b2: 1x1 (#3x3 reduce) -> 3x3 (#3x3)
    b3: 1x1 (#5x5 reduce) -> 5x5 (#5x5)
    b4: 3x3/1 max pool -> 1x1    (pool proj)
All convolutions use ReLU. Layer names follow "inception_<id>_<branch>" and each module ends in
a Concatenate layer "inception_<id>_concat", so tests can count modules and branches.

No auxiliary classifiers (they are training-only). Full: 224x224x3, 1000 classes,
6,998,552 parameters (the paper's table sums to ~6.8M; the difference is biases, which the
table leaves out). Tiny: 64x64, channels / 8, 10 classes.
"""
from __future__ import annotations

import keras

from tfmodels.zoo import common, layers as L

# id: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) from Table 1.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def conv(h, n, k, name, strides=1):
    return keras.layers.Conv2D(n, k, strides=strides, padding="same", activation="relu", kernel_initializer=L.he(), name=name)(h)


def inception(h, mid, widths, div):
    n1, r3, n3, r5, n5, pp = (L.ch(w, div) for w in widths)
    p = f"inception_{mid}"
    b1 = conv(h, n1, 1, f"{p}_1x1")
    b2 = conv(conv(h, r3, 1, f"{p}_3x3_reduce"), n3, 3, f"{p}_3x3")
    b3 = conv(conv(h, r5, 1, f"{p}_5x5_reduce"), n5, 5, f"{p}_5x5")
    b4 = keras.layers.MaxPooling2D(3, 1, padding="same", name=f"{p}_pool")(h)
    b4 = conv(b4, pp, 1, f"{p}_pool_proj")
    return keras.layers.Concatenate(name=f"{p}_concat")([b1, b2, b3, b4])


def googlenet(size=224, div=1, classes=1000, name="googlenet") -> keras.Model:
    x = keras.Input((size, size, 3), name="images")
    h = conv(x, L.ch(64, div), 7, "conv1_7x7_s2", strides=2)
    h = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1_3x3_s2")(h)
    h = L.LocalResponseNorm(name="pool1_norm1")(h)
    h = conv(h, L.ch(64, div), 1, "conv2_3x3_reduce")
    h = conv(h, L.ch(192, div), 3, "conv2_3x3")
    h = L.LocalResponseNorm(name="conv2_norm2")(h)
    h = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool2_3x3_s2")(h)
    for mid, widths in INCEPTION.items():
        h = inception(h, mid, widths, div)
        if mid in ("3b", "4e"):
            h = keras.layers.MaxPooling2D(3, 2, padding="same", name=f"pool{mid[0]}_3x3_s2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool5_avg")(h)
    h = keras.layers.Dropout(0.4, name="pool5_drop")(h)
    y = keras.layers.Dense(classes, name="loss3_classifier")(h)
    return keras.Model(x, y, name=name)


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    if variant == "full":
        size, div, labels = 224, 1, L.imagenet_labels()
    else:
        size, div, labels = 64, 8, L.CIFAR10_LABELS
    model = googlenet(size, div, len(labels))

    return L.classifier("googlenet", "GoogLeNet (Inception v1)", variant, model, size, labels)
