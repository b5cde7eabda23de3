"""YOLOv3 (Redmon & Farhadi, "YOLOv3: An Incremental Improvement", 2018).

Topology, as in the paper and darknet's yolov3.cfg:

* Darknet-53 backbone: a 3x3/32 conv, then 5 stages, each a stride-2 3x3
  conv (darknet pads top/left only) followed by [1, 2, 8, 8, 4] residual
  blocks (23 in all). A block is 1x1 conv (c/2) -> 3x3 conv (c) -> identity
  add. Every conv is conv (no bias) + BatchNorm + LeakyReLU(0.1).
* Head at 3 scales (strides 32, 16, 8): five alternating 1x1/3x3 convs, a 3x3
  conv and a 1x1 linear conv (with bias) to B*(5+C) channels, B = 3; the
  stride-32 and stride-16 branches feed a 1x1 conv + 2x nearest upsampling
  that is concatenated with the stage-4 / stage-3 backbone features.

The export returns the RAW grids (no sigmoid / exp; decoding, letterbox
undo and NMS are the Go plugin's job):

    grid_s8, grid_s16, grid_s32: float32 [batch, H/s, W/s, 3*(5+C)]

with per-anchor channel layout (tx, ty, tw, th, objectness, class scores...),
i.e. reshape to [batch, H/s, W/s, 3, 5+C]. grid_s8 uses anchors 0..2, grid_s16
anchors 3..5, grid_s32 anchors 6..8 (anchor_masks in edgeinfer.toml).

Layer names a test can count: residual blocks are the Add layers named
"darknet_s{stage}_res{i}_add"; the output convs are "yolo_grid_s{stride}".

Variants:
  full: 416x416, 80 COCO classes, COCO anchors, paper channel widths
        (62,001,757 parameters incl. BatchNorm statistics; 61,949,149 trainable,
        the widely quoted 61.9M of darknet yolov3.weights).
  tiny: 96x96, 3 classes, channel widths / 8, anchors scaled by 96/416.
Weights are random (seeded, He-normal like darknet) and the BatchNorm moving
statistics are calibrated on seeded random images (calibrate_batchnorm), so
the raw grids are O(1); this is an architecture export, not a trained model.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfmodels.zoo import common, layers as L

STAGE_BLOCKS = (1, 2, 8, 8, 4)
STRIDES = (8, 16, 32)
COCO_ANCHORS = (10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326)
ANCHOR_MASKS = (0, 1, 2, 3, 4, 5, 6, 7, 8)
NUM_ANCHORS_PER_SCALE = 3

COCO_LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

VARIANTS = {
    "full": dict(size=416, width_div=1, labels=COCO_LABELS, calib_batch=1),
    "tiny": dict(size=96, width_div=8, labels=["person", "bicycle", "car"], calib_batch=16),
}


def darknet_conv(x, filters: int, kernel: int, name: str, strides: int = 1):
    """Darknet conv: conv (no bias) + BN + LeakyReLU(0.1); stride 2 pads top/left only.
    Weights start He-normal, as darknet initialises them (scale sqrt(2 / fan_in))."""
    if strides == 2:
        x = layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"{name}_pad")(x)
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="valid" if strides == 2 else "same",
        use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=0.1, name=f"{name}_leaky")(x)


def residual_block(x, filters: int, name: str):
    y = darknet_conv(x, filters // 2, 1, f"{name}_a")
    y = darknet_conv(y, filters, 3, f"{name}_b")
    return layers.Add(name=f"{name}_add")([x, y])


def darknet53(x, div: int = 1):
    """Returns the stage-3, stage-4 and stage-5 feature maps (strides 8, 16, 32)."""
    x = darknet_conv(x, 32 // div, 3, "darknet_stem")
    feats = []
    for s, n in enumerate(STAGE_BLOCKS, start=1):
        c = (64 << (s - 1)) // div
        x = darknet_conv(x, c, 3, f"darknet_s{s}_down", strides=2)
        for i in range(1, n + 1):
            x = residual_block(x, c, f"darknet_s{s}_res{i}")
        feats.append(x)
    return feats[2], feats[3], feats[4]


def head_block(x, filters: int, name: str):
    """The 5-conv block (branch point) then 3x3 conv + linear 1x1 output conv."""
    for i, (f, k) in enumerate([(filters, 1), (filters * 2, 3), (filters, 1), (filters * 2, 3), (filters, 1)]):
        x = darknet_conv(x, f, k, f"{name}_conv{i + 1}")
    branch = x
    y = darknet_conv(x, filters * 2, 3, f"{name}_conv6")
    return branch, y


def build_model(size: int, num_classes: int, div: int = 1) -> keras.Model:
    out_ch = NUM_ANCHORS_PER_SCALE * (5 + num_classes)
    inp = keras.Input((size, size, 3), name="images")
    c3, c4, c5 = darknet53(inp, div)

    b32, y32 = head_block(c5, 512 // div, "yolo_head_s32")
    g32 = layers.Conv2D(out_ch, 1, name="yolo_grid_s32")(y32)

    x = darknet_conv(b32, 256 // div, 1, "yolo_up_s16")
    x = layers.UpSampling2D(2, name="yolo_up_s16_upsample")(x)
    x = layers.Concatenate(name="yolo_up_s16_concat")([x, c4])
    b16, y16 = head_block(x, 256 // div, "yolo_head_s16")
    g16 = layers.Conv2D(out_ch, 1, name="yolo_grid_s16")(y16)

    x = darknet_conv(b16, 128 // div, 1, "yolo_up_s8")
    x = layers.UpSampling2D(2, name="yolo_up_s8_upsample")(x)
    x = layers.Concatenate(name="yolo_up_s8_concat")([x, c3])
    _, y8 = head_block(x, 128 // div, "yolo_head_s8")
    g8 = layers.Conv2D(out_ch, 1, name="yolo_grid_s8")(y8)

    return keras.Model(inp, {"grid_s8": g8, "grid_s16": g16, "grid_s32": g32}, name="yolov3")


def scaled_anchors(size: int) -> list[int]:
    if size == 416:
        return list(COCO_ANCHORS)
    return [max(1, int(round(a * size / 416))) for a in COCO_ANCHORS]


def build(variant: str = "tiny", seed: int = 0) -> common.Exportable:
    cfg = VARIANTS[variant]
    keras.utils.set_random_seed(seed)
    size, labels = cfg["size"], cfg["labels"]
    model = build_model(size, len(labels), cfg["width_div"])
    calib = np.random.default_rng(seed + 1).random((cfg["calib_batch"], size, size, 3)).astype(np.float32)
    # Without calibrated BatchNorm statistics He-initialised residual stages
    # grow activations ~1e4x and the raw grids are meaningless.
    L.calibrate_batchnorm(model, calib)

    def fn(images):
        out = model(images, training=False)
        return {k: out[k] for k in ("grid_s8", "grid_s16", "grid_s32")}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, size, size, 3], tf.float32)})
    spec = {
        "task": "detect_yolo",
        "architecture": "YOLOv3",
        "variant": variant,
        "signature": common.SIGNATURE,
        "labels": list(labels),
        "input": {
            "key": "images", "height": size, "width": size, "channels": 3, "layout": "NHWC",
            "dtype": "float32", "resize": "letterbox", "scale": 1.0 / 255.0,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        },
        "output": {
            "grids": ["grid_s8", "grid_s16", "grid_s32"],
            "strides": list(STRIDES),
            "anchors": scaled_anchors(size),
            "anchor_masks": list(ANCHOR_MASKS),
        },
    }
    return common.Exportable(name="yolov3", keras_model=model, serve=serve, spec=spec)
