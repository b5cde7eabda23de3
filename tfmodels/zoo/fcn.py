"""Fully convolutional networks for semantic segmentation (Long, Shelhamer, Darrell 2015), VGG-16 backbone.

    VGG-16 conv1_1 .. pool5 (13 convs, 5 max pools)
    conv6 ("fc6") 7x7 4096, ReLU, dropout; conv7 ("fc7") 1x1 4096, ReLU, dropout
    score_fr: 1x1 -> N classes                                         (stride 32)

    FCN-32s: upscore32 (transposed conv, 64x64 / 32) -> crop to input
    FCN-16s: upscore2 (4x4 / 2) of score_fr, crop to score_pool4 (1x1 on pool4), ADD (fuse_pool4);
             upscore16 (32x32 / 16) -> crop to input
    FCN-8s:  as 16s, then upscore_pool4 (4x4 / 2) of fuse_pool4, crop to score_pool3 (1x1 on pool3),
             ADD (fuse_pool3); upscore8 (16x16 / 8) -> crop to input

Output "logits" [B, H, W, N] at input resolution (softmax not applied). All upsampling kernels
start as per-class bilinear interpolation; as in the paper the final upsampling of each net is
fixed (a constant depthwise transposed convolution, no variables) and the 2x ones are learned
(full C x C transposed convolutions).

Deviations (the first two let any input size work without the paper's 100-pixel input padding):
- convolutions (including the 7x7 conv6) use 'same' padding and pools 'same' (ceil) padding;
- crops therefore use offset s/2 for a stride-s upsampling (kernel 2s), the offset that puts
  each coarse pixel's centre on its receptive field's centre, instead of the reference model's
  offsets (e.g. 5, 9 and 31 in FCN-8s) that compensate for the 100-pixel pad;
- score_pool3/score_pool4 get the zoo's random (He) init instead of the paper's zero init, so
  the random-weight golden outputs exercise the skips.

Full: VGG-16 widths, 21 PASCAL VOC classes, default 512x512 (any size accepted).
Tiny: channels / 16 (conv6/conv7 256), 21 VOC classes, default 64x64 (any size accepted).
"""
from __future__ import annotations

import keras

from tfmodels.zoo import common, layers as L
from tfmodels.zoo.vgg16 import vgg16_convs


def upsample(h, classes, stride, name, trainable):
    """Transposed convolution, kernel 2*stride, initialised to bilinear interpolation.

    Learned upsamplings are full Conv2DTranspose layers (C x C kernels); the fixed final one is
    the equivalent per-class depthwise form without variables (layers.FixedBilinearUpsampling).
    """
    if not trainable:
        return L.FixedBilinearUpsampling(stride, name=name)(h)
    k = 2 * stride
    layer = keras.layers.Conv2DTranspose(
        classes,
        k,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(L.bilinear_kernel(k, classes)),
        name=name,
    )
    return layer(h)


def fcn(kind="8s", div=1, classes=21, name=None) -> keras.Model:
    if kind not in ("32s", "16s", "8s"):
        raise ValueError(kind)
    x = keras.Input((None, None, 3), name="images")
    h, pools = vgg16_convs(x, div)
    h = keras.layers.Conv2D(L.ch(4096, div), 7, padding="same", activation="relu", kernel_initializer=L.he(), name="conv6")(h)
    h = keras.layers.Dropout(0.5, name="drop6")(h)
    h = keras.layers.Conv2D(L.ch(4096, div), 1, activation="relu", kernel_initializer=L.he(), name="conv7")(h)
    h = keras.layers.Dropout(0.5, name="drop7")(h)
    score = keras.layers.Conv2D(classes, 1, kernel_initializer=L.he(), name="score_fr")(h)

    if kind == "32s":
        up = upsample(score, classes, 32, "upscore32", trainable=False)
        y = L.CropLike(16, name="score")(up, x)
        return keras.Model(x, y, name=name or "fcn32s")

    sp4 = keras.layers.Conv2D(classes, 1, kernel_initializer=L.he(), name="score_pool4")(pools["pool4"])
    up2 = upsample(score, classes, 2, "upscore2", trainable=True)
    up2 = L.CropLike(1, name="upscore2_crop")(up2, sp4)
    fuse4 = keras.layers.Add(name="fuse_pool4")([up2, sp4])
    if kind == "16s":
        up = upsample(fuse4, classes, 16, "upscore16", trainable=False)
        y = L.CropLike(8, name="score")(up, x)
        return keras.Model(x, y, name=name or "fcn16s")

    sp3 = keras.layers.Conv2D(classes, 1, kernel_initializer=L.he(), name="score_pool3")(pools["pool3"])
    up4 = upsample(fuse4, classes, 2, "upscore_pool4", trainable=True)
    up4 = L.CropLike(1, name="upscore_pool4_crop")(up4, sp3)
    fuse3 = keras.layers.Add(name="fuse_pool3")([up4, sp3])
    up = upsample(fuse3, classes, 8, "upscore8", trainable=False)
    y = L.CropLike(4, name="score")(up, x)
    return keras.Model(x, y, name=name or "fcn8s")


def _build(kind: str, variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    div, size = (1, 512) if variant == "full" else (16, 64)
    labels = L.VOC_LABELS
    model = fcn(kind, div, len(labels))
    return L.segmenter(f"fcn{kind}", f"FCN-{kind} (VGG-16)", variant, model, size, labels)


def build_fcn32s(variant: str) -> common.Exportable:
    return _build("32s", variant)


def build_fcn16s(variant: str) -> common.Exportable:
    return _build("16s", variant)


def build_fcn8s(variant: str) -> common.Exportable:
    return _build("8s", variant)
