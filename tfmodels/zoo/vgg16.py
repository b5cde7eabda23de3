"""VGG-16 (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image recognition"), configuration D.

    5 stages of 3x3 / stride 1 / pad 1 convolutions with ReLU, each followed by 2x2 / 2 max pooling:
        stage 1: 2 x 64   stage 2: 2 x 128   stage 3: 3 x 256   stage 4: 3 x 512   stage 5: 3 x 512
    FC-4096, ReLU, dropout 0.5; FC-4096, ReLU, dropout 0.5; FC-1000 logits.
    224x224x3 input, 138,357,544 parameters.

Two registry entries:
- vgg16: the classifier above (build_vgg16).
- vgg16_fcn: the paper's test-time "fully convolutional" form (sec. 3.2): the first FC layer
  becomes a 7x7 convolution, the last two 1x1 convolutions, and the class score map is
  spatially averaged ("sum-pooled"), so any input size works (build_vgg16_fcn). The
  convolutions use 'same' padding (the paper applies the converted net to whole uncropped
  images; 'same' keeps a 1x1 map for inputs smaller than 224 instead of failing). Same parameter
  count as vgg16.

Tiny: 32x32 input for vgg16 (vgg16_fcn takes any size; its golden input is 2 x 48x80),
channels / 16 (4-8-16-32-32, FC 256), 10 classes. Pools use 'same' padding (ceil), which equals
the paper's for the 224 and 32 sizes and accepts odd sizes in the FCN form.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common, layers as L

STAGES = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]


def vgg16_convs(x, div=1, pool_padding="same"):
    """The 13 conv layers + 5 pools of configuration D. Returns (output, {"pool1": t, ..., "pool5": t})."""
    pools = {}
    h = x
    for s, (n, width) in enumerate(STAGES, start=1):
        for i in range(1, n + 1):
            h = keras.layers.Conv2D(
                L.ch(width, div), 3, padding="same", activation="relu", kernel_initializer=L.he(), name=f"conv{s}_{i}"
            )(h)
        h = keras.layers.MaxPooling2D(2, 2, padding=pool_padding, name=f"pool{s}")(h)
        pools[f"pool{s}"] = h
    return h, pools


def vgg16(size=224, div=1, classes=1000, name="vgg16") -> keras.Model:
    x = keras.Input((size, size, 3), name="images")
    h, _ = vgg16_convs(x, div)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(L.ch(4096, div), activation="relu", kernel_initializer=L.he(), name="fc6")(h)
    h = keras.layers.Dropout(0.5, name="drop6")(h)
    h = keras.layers.Dense(L.ch(4096, div), activation="relu", kernel_initializer=L.he(), name="fc7")(h)
    h = keras.layers.Dropout(0.5, name="drop7")(h)
    y = keras.layers.Dense(classes, name="fc8")(h)
    return keras.Model(x, y, name=name)


def vgg16_fcn(div=1, classes=1000, name="vgg16_fcn") -> keras.Model:
    x = keras.Input((None, None, 3), name="images")
    h, _ = vgg16_convs(x, div)
    h = keras.layers.Conv2D(L.ch(4096, div), 7, padding="same", activation="relu", kernel_initializer=L.he(), name="fc6_conv")(h)
    h = keras.layers.Dropout(0.5, name="drop6")(h)
    h = keras.layers.Conv2D(L.ch(4096, div), 1, activation="relu", kernel_initializer=L.he(), name="fc7_conv")(h)
    h = keras.layers.Dropout(0.5, name="drop7")(h)
    h = keras.layers.Conv2D(classes, 1, name="fc8_conv")(h)  # class score map
    y = keras.layers.GlobalAveragePooling2D(name="score_pool")(h)
    return keras.Model(x, y, name=name)


def _variant(variant):
    L.check_variant(variant)
    L.seed(0)
    if variant == "full":
        return 224, 1, L.imagenet_labels()
    return 32, 16, L.CIFAR10_LABELS


def build_vgg16(variant: str) -> common.Exportable:
    size, div, labels = _variant(variant)
    model = vgg16(size, div, len(labels))

    return L.classifier("vgg16", "VGG-16", variant, model, size, labels)


def build_vgg16_fcn(variant: str) -> common.Exportable:
    size, div, labels = _variant(variant)
    model = vgg16_fcn(div, len(labels))

    def fn(images):
        return {"logits": model(images, training=False)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, None, None, 3], tf.float32)})

    def golden(rng: np.random.Generator):
        h, w = (48, 80) if variant == "tiny" else (256, 320)
        return {"images": rng.random((2, h, w, 3), dtype=np.float64).astype(np.float32)}

    spec = L.spec(
        "classify",
        "VGG-16 (fully convolutional)",
        variant,
        L.image_input("images", 0, 0, 3),  # any size: no resize needed
        {"logits": "logits", "softmax": True},
        labels,
    )
    return common.Exportable(name="vgg16_fcn", keras_model=model, serve=serve, spec=spec, golden_inputs=golden)


build = build_vgg16
