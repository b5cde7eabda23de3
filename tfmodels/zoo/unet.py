"""U-Net (Ronneberger, Fischer, Brox 2015, "U-Net: convolutional networks for biomedical image segmentation").

    contracting path, 4 stages: two 3x3 convs + ReLU (64, 128, 256, 512), then 2x2 / 2 max pool
    bottleneck: two 3x3 convs + ReLU (1024), dropout 0.5 ("drop-out layers at the end of the
        contracting path")
    expansive path, 4 stages: 2x2 / 2 transposed convolution ("up-convolution") halving the
        channels, CONCATENATION with the contracting stage's feature map, two 3x3 convs + ReLU
        (512, 256, 128, 64)
    final 1x1 convolution -> N classes: output "logits" [B, H, W, N] (softmax not applied)

Deviations from the paper:
- 'same' padding everywhere (the paper uses unpadded convolutions, so a 572x572 input gives a
  388x388 map and the skips are cropped); here the output has the input's size. Pools use
  'same' (ceil) padding and each upsampled map is cropped to its skip's size, so any input size
  works, not only multiples of 16.
- 3-channel (RGB) input instead of the paper's single-channel microscopy images; 2 classes
  (background / foreground) as in the paper's cell segmentation.

Full: 64..1024 channels, default 512x512 (any size accepted), 31.0M parameters.
Tiny: channels / 16, default 64x64 (any size accepted).
"""
from __future__ import annotations

import keras

from tfmodels.zoo import common, layers as L

WIDTHS = [64, 128, 256, 512]
LABELS = ["background", "foreground"]


def double_conv(h, n, name):
    for i in (1, 2):
        h = keras.layers.Conv2D(n, 3, padding="same", activation="relu", kernel_initializer=L.he(), name=f"{name}_conv{i}")(h)
    return h


def unet(div=1, classes=2, channels=3, name="unet") -> keras.Model:
    x = keras.Input((None, None, channels), name="images")
    skips = []
    h = x
    for i, w in enumerate(WIDTHS, start=1):
        h = double_conv(h, L.ch(w, div), f"down{i}")
        skips.append(h)
        h = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"down{i}_pool")(h)
    h = double_conv(h, L.ch(1024, div), "bottleneck")
    h = keras.layers.Dropout(0.5, name="bottleneck_drop")(h)
    for i, w in reversed(list(enumerate(WIDTHS, start=1))):
        h = keras.layers.Conv2DTranspose(L.ch(w, div), 2, strides=2, kernel_initializer=L.he(), name=f"up{i}_upconv")(h)
        h = L.CropLike(0, name=f"up{i}_crop")(h, skips[i - 1])
        h = keras.layers.Concatenate(name=f"up{i}_concat")([skips[i - 1], h])
        h = double_conv(h, L.ch(w, div), f"up{i}")
    y = keras.layers.Conv2D(classes, 1, name="logits")(h)
    return keras.Model(x, y, name=name)


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    div, size = (1, 512) if variant == "full" else (16, 64)
    model = unet(div, len(LABELS))
    return L.segmenter("unet", "U-Net", variant, model, size, LABELS)
