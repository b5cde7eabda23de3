"""Mask R-CNN (He, Gkioxari, Dollar & Girshick, ICCV 2017), test-time graph.

Mask R-CNN = the Faster R-CNN of faster_rcnn.py (reused: backbone, RPN,
proposals, box head, per-class NMS, same OD-API outputs), with RoIAlign
instead of RoIPool in the box head, plus the mask branch that the paper runs
at test time on the (up to M = 100) final detections:

    detection boxes -> RoIAlign-style crop of the backbone features to 14x14
                       (tf.image.crop_and_resize, bilinear; one sample per bin)
                    -> 4 x (3x3 conv, 256, ReLU)
                    -> 2x2 stride-2 transposed conv (256, ReLU)  -> 28x28
                    -> 1x1 conv to C channels, sigmoid (one binary mask per class)
                    -> the mask of each detection's own class

Extra output (OD API layout): "detection_masks" float32 [batch, M, 28, 28] in
[0, 1], box-relative (the consumer resizes each mask into its detection box).

Deviation from the paper: the backbone is Faster R-CNN's VGG-16 (conv5_3,
stride 16) with the fc6/fc7 box head, not ResNet-C4/FPN, because this file
reuses faster_rcnn.py; the mask head is the paper's FPN-variant head (4 convs,
deconv, 1x1) applied to the stride-16 feature map.

Variants: as faster_rcnn ("full" 600x600 / 80 COCO classes / 256-channel mask
head; "tiny" 128x128 / 3 classes / channels / 16).
"""
from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import layers

from tfmodels.zoo import faster_rcnn

MASK_CROP = 14
MASK_SIZE = 28
MASK_CONVS = 4
MASK_CHANNELS = 256

CONFIGS = {k: dataclasses.replace(v, roi_op="align") for k, v in faster_rcnn.CONFIGS.items()}
OUTPUT_KEYS = faster_rcnn.DETECTION_KEYS + ("detection_masks",)


class MaskRoIAlign(layers.Layer):
    """[features, detection_boxes [batch, M, 4]] -> [batch*M, 14, 14, C]."""

    def __init__(self, crop: int = MASK_CROP, **kw):
        super().__init__(**kw)
        self.crop = crop

    def call(self, inputs):
        features, boxes = inputs
        return faster_rcnn.roi_crop(features, boxes, self.crop, None)


class SelectClassMask(layers.Layer):
    """[masks [batch*M, h, w, C], classes [batch, M] (1-based float)] -> [batch, M, h, w]."""

    def call(self, inputs):
        masks, classes = inputs
        m = classes.shape[1]
        h, w, c = masks.shape[1], masks.shape[2], masks.shape[3]
        masks = tf.transpose(tf.reshape(masks, [-1, m, h, w, c]), [0, 1, 4, 2, 3])  # [B, M, C, h, w]
        idx = tf.clip_by_value(tf.cast(classes, tf.int32) - 1, 0, c - 1)
        return tf.gather(masks, idx, batch_dims=2)


def mask_head(features, boxes, classes, num_classes: int, channels: int):
    x = MaskRoIAlign(name="mask_roi_align")([features, boxes])
    for i in range(1, MASK_CONVS + 1):
        x = layers.Conv2D(channels, 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"mask_conv{i}")(x)
    x = layers.Conv2DTranspose(channels, 2, strides=2, activation="relu",
                               kernel_initializer="he_normal", name="mask_deconv")(x)
    x = layers.Conv2D(num_classes, 1, activation="sigmoid", name="mask_logits")(x)
    return SelectClassMask(name="detection_masks")([x, classes])


def build(variant: str = "tiny", seed: int = 0):
    cfg = CONFIGS[variant]
    keras.utils.set_random_seed(seed)
    inp, out = faster_rcnn.build_graph(cfg)
    masks = mask_head(out["features"], out["detection_boxes"], out["detection_classes"],
                      cfg.num_classes, MASK_CHANNELS // cfg.width_div)
    outputs = {k: out[k] for k in faster_rcnn.DETECTION_KEYS}
    outputs["detection_masks"] = masks
    model = keras.Model(inp, outputs, name="mask_rcnn")
    model.rcnn_config = cfg
    spec = faster_rcnn.rcnn_spec(cfg, "Mask R-CNN", variant, masks=True)
    return faster_rcnn.make_exportable("mask_rcnn", model, cfg, OUTPUT_KEYS, spec)
