"""FaceNet (Schroff, Kalenichenko, Philbin 2015, "FaceNet: a unified embedding for face recognition and clustering").

The CNN is the paper's NN2, the Inception-style network of Table 2 (not the Zeiler&Fergus-style
NN1), followed by a 128-d fully connected layer and L2 normalisation, so embeddings lie on the
unit hypersphere and squared Euclidean distance compares faces:

    conv1 7x7x3 /2 64, max pool 3x3 /2, LRN
    inception (2): 1x1 64, 3x3 192; LRN, max pool 3x3 /2
    inception 3a  [64 | 96->128 | 16->32  | max pool -> 32]
    inception 3b  [64 | 96->128 | 32->64  | L2 pool  -> 64]
    inception 3c  [-  | 128->256 /2 | 32->64 /2 | max pool /2 (pass-through)]
    inception 4a  [256 | 96->192  | 32->64  | L2 -> 128]
    inception 4b  [224 | 112->224 | 32->64  | L2 -> 128]
    inception 4c  [192 | 128->256 | 32->64  | L2 -> 128]
    inception 4d  [160 | 144->288 | 32->64  | L2 -> 128]
    inception 4e  [-   | 160->256 /2 | 64->128 /2 | max pool /2 (pass-through)]
    inception 5a  [384 | 192->384 | 48->128 | L2 -> 128]
    inception 5b  [384 | 192->384 | 48->128 | max pool -> 128]
    average pool, fully connected 128, L2 normalisation

Columns are [#1x1 | #3x3 reduce -> #3x3 | #5x5 reduce -> #5x5 | pool -> pool proj]. "L2 pool" is
the square root of the sum of squares over the 3x3 window. Full: 224x224x3 (NN2's input).
Tiny: 64x64, channels / 8, embedding still 128-d.

`triplet_loss` is the paper's eq. (1)/(2): sum_i [ ||f(a)-f(p)||^2 - ||f(a)-f(n)||^2 + alpha ]_+.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfmodels.zoo import common, layers as L

EMBEDDING_DIM = 128

# id: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool type, pool proj, stride) from Table 2.
# 0 means "no such branch"; for the stride-2 modules the pool branch is a pass-through max pool.
NN2 = {
    "3a": (64, 96, 128, 16, 32, "max", 32, 1),
    "3b": (64, 96, 128, 32, 64, "l2", 64, 1),
    "3c": (0, 128, 256, 32, 64, "max", 0, 2),
    "4a": (256, 96, 192, 32, 64, "l2", 128, 1),
    "4b": (224, 112, 224, 32, 64, "l2", 128, 1),
    "4c": (192, 128, 256, 32, 64, "l2", 128, 1),
    "4d": (160, 144, 288, 32, 64, "l2", 128, 1),
    "4e": (0, 160, 256, 64, 128, "max", 0, 2),
    "5a": (384, 192, 384, 48, 128, "l2", 128, 1),
    "5b": (384, 192, 384, 48, 128, "max", 128, 1),
}


class L2Pool(keras.layers.Layer):
    """L2 pooling: sqrt(sum of x^2 over a k x k window), stride 1, zero 'same' padding."""

    def __init__(self, k=3, **kw):
        super().__init__(**kw)
        self.k = k

    def call(self, x):
        p = self.k // 2
        sq = tf.pad(tf.square(x), [[0, 0], [p, p], [p, p], [0, 0]])
        s = tf.nn.avg_pool2d(sq, self.k, 1, "VALID") * float(self.k * self.k)
        # sqrt(s) with a zero-safe gradient (windows of all-zero ReLU outputs are common).
        pos = s > 0
        return tf.where(pos, tf.sqrt(tf.where(pos, s, tf.ones_like(s))), tf.zeros_like(s))

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def conv(h, n, k, name, strides=1):
    return keras.layers.Conv2D(n, k, strides=strides, padding="same", activation="relu", kernel_initializer=L.he(), name=name)(h)


def inception(h, mid, cfg, div):
    n1, r3, n3, r5, n5, pool, pp, s = cfg
    c = lambda n: L.ch(n, div)  # noqa: E731
    p = f"inception_{mid}"
    branches = []
    if n1:
        branches.append(conv(h, c(n1), 1, f"{p}_1x1"))
    branches.append(conv(conv(h, c(r3), 1, f"{p}_3x3_reduce"), c(n3), 3, f"{p}_3x3", strides=s))
    branches.append(conv(conv(h, c(r5), 1, f"{p}_5x5_reduce"), c(n5), 5, f"{p}_5x5", strides=s))
    if pool == "l2":
        b = L2Pool(3, name=f"{p}_pool")(h)
    else:
        b = keras.layers.MaxPooling2D(3, s, padding="same", name=f"{p}_pool")(h)
    branches.append(conv(b, c(pp), 1, f"{p}_pool_proj") if pp else b)
    return keras.layers.Concatenate(name=f"{p}_concat")(branches)


def nn2(size=224, div=1, dim=EMBEDDING_DIM, name="facenet_nn2") -> keras.Model:
    x = keras.Input((size, size, 3), name="images")
    h = conv(x, L.ch(64, div), 7, "conv1", strides=2)
    h = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1")(h)
    h = L.LocalResponseNorm(name="norm1")(h)
    h = conv(h, L.ch(64, div), 1, "inception_2_reduce")
    h = conv(h, L.ch(192, div), 3, "inception_2")
    h = L.LocalResponseNorm(name="norm2")(h)
    h = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool2")(h)
    for mid, cfg in NN2.items():
        h = inception(h, mid, cfg, div)
    h = keras.layers.GlobalAveragePooling2D(name="avg_pool")(h)
    h = keras.layers.Dense(dim, name="fc_embedding")(h)
    y = L.L2Normalize(name="l2_normalize")(h)
    return keras.Model(x, y, name=name)


def triplet_loss(anchor, positive, negative, margin: float = 0.2):
    """FaceNet triplet loss, eq. (2): sum over the batch of max(0, ||a-p||^2 - ||a-n||^2 + margin).

    anchor/positive/negative: [B, D] embeddings (normally L2-normalised). Returns a scalar.
    """
    a, p, n = (tf.convert_to_tensor(t, dtype=tf.float32) for t in (anchor, positive, negative))
    pos = tf.reduce_sum(tf.square(a - p), axis=-1)
    neg = tf.reduce_sum(tf.square(a - n), axis=-1)
    return tf.reduce_sum(tf.maximum(pos - neg + margin, 0.0))


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)
    L.seed(0)
    size, div = (224, 1) if variant == "full" else (64, 8)
    model = nn2(size, div)

    def fn(images):
        return {"embedding": model(images, training=False)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, size, size, 3], tf.float32)})
    spec = L.spec(
        "embed",
        "FaceNet (NN2, Inception)",
        variant,
        L.image_input("images", size, size, 3, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        {"embedding": "embedding", "dim": EMBEDDING_DIM},
    )
    return common.Exportable(name="facenet", keras_model=model, serve=serve, spec=spec)
