"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, "ImageNet classification with deep convolutional neural networks").

    input 227x227x3 (the paper says 224; 227 is what makes conv1's 55x55 output come out)
    conv1  96 @ 11x11 / 4, ReLU, LRN, max pool 3x3 / 2 (overlapping)    -> 27x27x96
    conv2 256 @ 5x5 pad 2, 2 groups, ReLU, LRN, max pool 3x3 / 2        -> 13x13x256
    conv3 384 @ 3x3 pad 1, ReLU (sees all of conv2: the cross-GPU layer)
    conv4 384 @ 3x3 pad 1, 2 groups, ReLU
    conv5 256 @ 3x3 pad 1, 2 groups, ReLU, max pool 3x3 / 2             ->  6x6x256
    fc6 4096 ReLU, dropout 0.5; fc7 4096 ReLU, dropout 0.5; fc8 1000 logits

The paper's two-GPU split is kept as grouped convolutions (groups=2) on conv2, conv4 and
conv5, which gives the paper's ~61M parameters (60,965,224). LRN uses the paper's
k=2, n=5, alpha=1e-4, beta=0.75. The fully connected layers of the paper are split across the
GPUs too, but each GPU's half sees the whole previous layer, so they are plain dense layers.

Tiny: same layers at 67x67 input (the smallest size near 64 that keeps every valid-padded
conv/pool step well defined: 67 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1), channels and FC widths / 16,
10 classes. Dropout is inactive at inference (the serve function calls the model with
training=False).
"""
from __future__ import annotations

import keras

from tfmodels.zoo import common, layers as L


def alexnet(size=227, div=1, classes=1000, name="alexnet") -> keras.Model:
    c = lambda n: L.ch(n, div)  # noqa: E731
    init = L.he()
    x = keras.Input((size, size, 3), name="images")
    h = keras.layers.Conv2D(c(96), 11, strides=4, activation="relu", kernel_initializer=init, name="conv1")(x)
    h = L.LocalResponseNorm(name="norm1")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool1")(h)
    h = keras.layers.Conv2D(c(256), 5, padding="same", groups=2, activation="relu", kernel_initializer=init, name="conv2")(h)
    h = L.LocalResponseNorm(name="norm2")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool2")(h)
    h = keras.layers.Conv2D(c(384), 3, padding="same", activation="relu", kernel_initializer=init, name="conv3")(h)
    h = keras.layers.Conv2D(c(384), 3, padding="same", groups=2, activation="relu", kernel_initializer=init, name="conv4")(h)
    h = keras.layers.Conv2D(c(256), 3, padding="same", groups=2, activation="relu", kernel_initializer=init, name="conv5")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool5")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(c(4096), activation="relu", kernel_initializer=init, name="fc6")(h)
    h = keras.layers.Dropout(0.5, name="drop6")(h)
    h = keras.layers.Dense(c(4096), activation="relu", kernel_initializer=init, name="fc7")(h)
    h = keras.layers.Dropout(0.5, name="drop7")(h)
    y = keras.layers.Dense(classes, name="fc8")(h)
    return keras.Model(x, y, name=name)


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    if variant == "full":
        size, div, labels = 227, 1, L.imagenet_labels()
    else:
        size, div, labels = 67, 16, L.CIFAR10_LABELS
    model = alexnet(size, div, len(labels))

    return L.classifier("alexnet", "AlexNet", variant, model, size, labels)
