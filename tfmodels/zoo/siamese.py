"""Siamese network with a contrastive loss.

One tower (a single Keras Model, so a single set of weights) is applied to both inputs, "left"
and "right"; the outputs are the two embeddings and their Euclidean distance. Trained with the
contrastive loss of Hadsell, Chopra & LeCun 2006 ("Dimensionality reduction by learning an
invariant mapping", eq. 4).

Tower: the convolutional tower of Koch, Zemel & Salakhutdinov 2015 ("Siamese neural networks for
one-shot image recognition"), on 105x105 grayscale images:
    conv 64 @ 10x10, ReLU, max pool 2x2
    conv 128 @ 7x7, ReLU, max pool 2x2
    conv 128 @ 4x4, ReLU, max pool 2x2
    conv 256 @ 4x4, ReLU
    fully connected 4096 -> the embedding
Deviation from Koch et al.: the embedding layer is linear (their sigmoid plus weighted-L1 /
logistic head belongs to a cross-entropy objective); with a contrastive loss the pair is compared
by Euclidean distance, as in Hadsell et al.

Tiny: the same 105x105x1 input (the valid convolutions need it), channels and embedding / 16.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common, layers as L


def tower(size=105, div=1, name="tower") -> keras.Model:
    c = lambda n: L.ch(n, div)  # noqa: E731
    x = keras.Input((size, size, 1), name="image")
    h = keras.layers.Conv2D(c(64), 10, activation="relu", kernel_initializer=L.he(), name="conv1")(x)
    h = keras.layers.MaxPooling2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(c(128), 7, activation="relu", kernel_initializer=L.he(), name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool2")(h)
    h = keras.layers.Conv2D(c(128), 4, activation="relu", kernel_initializer=L.he(), name="conv3")(h)
    h = keras.layers.MaxPooling2D(2, name="pool3")(h)
    h = keras.layers.Conv2D(c(256), 4, activation="relu", kernel_initializer=L.he(), name="conv4")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    y = keras.layers.Dense(c(4096), name="embedding")(h)
    return keras.Model(x, y, name=name)


class EuclideanDistance(keras.layers.Layer):
    """||a - b||_2 per row; exactly 0 for identical inputs, with a finite gradient there."""

    def call(self, a, b):
        s = tf.reduce_sum(tf.square(a - b), axis=-1)
        pos = s > 0
        return tf.where(pos, tf.sqrt(tf.where(pos, s, tf.ones_like(s))), tf.zeros_like(s))

    def compute_output_shape(self, a_shape, b_shape):
        return (a_shape[0],)


def siamese(size=105, div=1, name="siamese") -> keras.Model:
    t = tower(size, div)
    left = keras.Input((size, size, 1), name="left")
    right = keras.Input((size, size, 1), name="right")
    el, er = t(left), t(right)  # the same layer object twice: shared weights
    d = EuclideanDistance(name="distance")(el, er)
    return keras.Model([left, right], {"distance": d, "embedding_left": el, "embedding_right": er}, name=name)


def contrastive_loss(distance, same, margin: float = 1.0):
    """Contrastive loss (Hadsell et al. 2006, eq. 4), averaged over the batch.

    L = same * 1/2 D^2 + (1 - same) * 1/2 max(0, margin - D)^2

    `same` is 1 for a similar (genuine) pair and 0 for a dissimilar one (the paper's Y is the
    opposite: Y = 0 similar, Y = 1 dissimilar).
    """
    d = tf.convert_to_tensor(distance, dtype=tf.float32)
    y = tf.cast(tf.convert_to_tensor(same), tf.float32)
    return tf.reduce_mean(y * 0.5 * tf.square(d) + (1.0 - y) * 0.5 * tf.square(tf.maximum(margin - d, 0.0)))


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    size, div = (105, 1) if variant == "full" else (105, 16)
    model = siamese(size, div)
    dim = L.ch(4096, div)

    def fn(left, right):
        return model({"left": left, "right": right}, training=False)

    spec_in = tf.TensorSpec([None, size, size, 1], tf.float32)
    serve = common.make_serve(fn, {"left": spec_in, "right": spec_in})
    inp = {"key": "left", "pair_key": "right"}
    inp.update({k: v for k, v in L.image_input("left", size, size, 1, mean=[0.0], std=[1.0]).items() if k != "key"})
    spec = L.spec(
        "siamese",
        "Siamese network (Koch et al. tower, contrastive loss)",
        variant,
        inp,
        {"distance": "distance", "embedding": "embedding_left", "pair_embedding": "embedding_right", "dim": dim},
    )

    def golden(rng):
        # Pair 0 is an image with itself (distance exactly 0), pair 1 two different images.
        left = rng.random((2, size, size, 1), dtype=np.float64).astype(np.float32)
        right = left.copy()
        right[1] = rng.random((size, size, 1), dtype=np.float64).astype(np.float32)
        return {"left": left, "right": right}

    return common.Exportable(name="siamese", keras_model=model, serve=serve, spec=spec, golden_inputs=golden)
