"""ResNet-50 (He, Zhang, Ren, Sun 2016, "Deep residual learning for image recognition"), Table 1.

    conv1 7x7/2 64, BN, ReLU; max pool 3x3/2
    conv2_x: 3 bottleneck blocks [1x1 64, 3x3 64, 1x1 256]
    conv3_x: 4 blocks            [1x1 128, 3x3 128, 1x1 512]
    conv4_x: 6 blocks            [1x1 256, 3x3 256, 1x1 1024]
    conv5_x: 3 blocks            [1x1 512, 3x3 512, 1x1 2048]
    global average pool, 1000-way fully connected (logits)

16 bottleneck blocks: 1x1 reduce, 3x3, 1x1 expand (x4), each conv followed by batch
normalisation, ReLU after the addition. Shortcuts are identity except in the first block of
each stage, where a 1x1 projection (option B) matches the shape. Downsampling is done by
conv3_1, conv4_1 and conv5_1 with stride 2, placed on the first 1x1 convolution as in the
authors' original (Caffe) model, not on the 3x3 ("ResNet v1.5"). 25,636,712 parameters
(25,583,592 trainable; the rest are BN moving statistics).

Layer names follow Keras Applications: conv{stage}_block{n}_{1,2,3,0}_{conv,bn}, and every block
ends in an Add layer "conv{stage}_block{n}_add", so tests count blocks from model.layers.

Full: 224x224x3, 1000 classes (exported full for benchmarks). Tiny: 64x64, channels / 8,
10 classes. The random-weight exports get their BN moving statistics from one calibration
batch (see layers.calibrate_batchnorm) so golden outputs stay O(1).
"""
from __future__ import annotations

import keras
import numpy as np

from tfmodels.zoo import common, layers as L

STAGES = [(2, 64, 3), (3, 128, 4), (4, 256, 6), (5, 512, 3)]  # (stage, bottleneck width, blocks)
BN_EPS = 1e-5


def bn(name):
    return keras.layers.BatchNormalization(axis=-1, epsilon=BN_EPS, name=name)


def bottleneck(h, width, stride, project, name):
    out = 4 * width
    if project:
        sc = keras.layers.Conv2D(out, 1, strides=stride, name=f"{name}_0_conv")(h)
        sc = bn(f"{name}_0_bn")(sc)
    else:
        sc = h
    y = keras.layers.Conv2D(width, 1, strides=stride, name=f"{name}_1_conv")(h)
    y = bn(f"{name}_1_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_2_conv")(y)
    y = bn(f"{name}_2_bn")(y)
    y = keras.layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = keras.layers.Conv2D(out, 1, name=f"{name}_3_conv")(y)
    y = bn(f"{name}_3_bn")(y)
    y = keras.layers.Add(name=f"{name}_add")([sc, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def trunk(x, div=1):
    """conv1 .. conv5_x: image -> final feature map (stride 32, 2048/div channels)."""
    h = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    h = keras.layers.Conv2D(L.ch(64, div), 7, strides=2, name="conv1_conv")(h)
    h = bn("conv1_bn")(h)
    h = keras.layers.Activation("relu", name="conv1_relu")(h)
    h = keras.layers.ZeroPadding2D(1, name="pool1_pad")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool1_pool")(h)
    for stage, width, blocks in STAGES:
        for b in range(1, blocks + 1):
            stride = 2 if (b == 1 and stage > 2) else 1
            h = bottleneck(h, L.ch(width, div), stride, project=(b == 1), name=f"conv{stage}_block{b}")
    return h


def resnet50(size=224, div=1, classes=1000, name="resnet50") -> keras.Model:
    x = keras.Input((size, size, 3), name="images")
    h = trunk(x, div)
    h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(h)
    # N(0, 0.01) for the classifier as in the authors' Caffe models; it also keeps the
    # random-weight logits small, so graph-rewrite rounding differences (BN folding) stay far
    # below the golden tolerance.
    y = keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="predictions")(h)
    return keras.Model(x, y, name=name)


def resnet50_trunk(size=224, div=1, name="resnet50_trunk") -> keras.Model:
    """The convolutional part with global average pooling: image -> one 2048/div vector."""
    x = keras.Input((size, size, 3), name="images")
    h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(trunk(x, div))
    return keras.Model(x, h, name=name)


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    if variant == "full":
        size, div, labels = 224, 1, L.imagenet_labels()
    else:
        size, div, labels = 64, 8, L.CIFAR10_LABELS
    model = resnet50(size, div, len(labels))
    calib = np.random.default_rng(1).random((4, size, size, 3), dtype=np.float64).astype(np.float32)
    L.calibrate_batchnorm(model, calib)

    return L.classifier("resnet50", "ResNet-50", variant, model, size, labels)
