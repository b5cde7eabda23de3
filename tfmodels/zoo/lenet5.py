"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document recognition").

    input 32x32x1
    C1  6 maps 5x5 conv                 -> 28x28x6     156 params
    S2  2x2 subsampling                 -> 14x14x6      12 params
    C3  16 maps 5x5 conv, sparse table  -> 10x10x16   1516 params
    S4  2x2 subsampling                 ->  5x5x16      32 params
    C5  120 maps 5x5 conv               ->  1x1x120  48120 params
    F6  84 units                                     10164 params
    output 10 units                                    850 params
                                                     -----
                                                     60850   (paper: "about 60,000")

Faithful to the paper:
- squashing function f(a) = A tanh(S a) with A = 1.7159, S = 2/3 after C1, S2, C3, S4, C5, F6;
- S2/S4 "subsampling": the sum of each 2x2 block times one trainable coefficient per map plus
  one trainable bias per map (implemented as average pooling times the coefficient, which is
  the same function with the coefficient scaled by 4), then the squashing function;
- C3 uses Table I of the paper: each of the 16 maps sees only a subset of the 6 S2 maps.

Deviations:
- the output layer is a plain dense layer giving logits (softmax not in the graph), not the
  paper's Euclidean RBF units with fixed bitmap prototypes; training uses softmax cross-entropy
  and Adam (cosine decay, 15 epochs, random +-2 px shifts) instead of the paper's MAP criterion
  and stochastic diagonal Levenberg-Marquardt;
- data: scikit-learn's bundled 8x8 digits (values 0..16) upscaled by 4 (nearest neighbour) to
  32x32 and rescaled to pixels 0..255, not MNIST's 28x28 digits centred in a 32x32 field.

`tiny` and `full` are the same network. It is trained at build time (a few seconds) on a
fixed stratified split (test_size=0.25, random_state=0) with fixed seeds.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common, layers as L

SCALE = 1.0 / 255.0
SEED = 0

# Table I of the paper: which S2 maps (rows 0..5) feed each C3 map (columns 0..15).
C3_TABLE = [
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
]


def lecun_tanh(a):
    """The paper's squashing function A tanh(S a), A = 1.7159, S = 2/3 (appendix A)."""
    return 1.7159 * tf.math.tanh(a * (2.0 / 3.0))


class Subsampling(keras.layers.Layer):
    """S2/S4: 2x2 non-overlapping pooling, one trainable coefficient and bias per map, squashing."""

    def build(self, input_shape):
        c = input_shape[-1]
        self.coef = self.add_weight(name="coef", shape=(c,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(c,), initializer="zeros")

    def call(self, x):
        p = tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")
        return lecun_tanh(p * self.coef + self.bias)


class SparseConv(keras.layers.Layer):
    """C3: a 5x5 valid convolution where output map j only sees the input maps table[j].

    The 1516 trainable parameters (weights of the connections in the table, one
    bias per map) are placed into a dense [5, 5, in, out] kernel by a fixed 0/1
    matrix, so the graph is one matmul plus one Conv2D.
    """

    def __init__(self, table, kernel_size=5, **kw):
        super().__init__(**kw)
        self.table = [tuple(t) for t in table]
        self.k = kernel_size

    def build(self, input_shape):
        cin, cout = input_shape[-1], len(self.table)
        pairs = [(i, j) for j, ins in enumerate(self.table) for i in ins]
        place = np.zeros((len(pairs), cin * cout), dtype=np.float32)
        for p, (i, j) in enumerate(pairs):
            place[p, i * cout + j] = 1.0
        self.place = tf.constant(place)
        self.cin, self.cout = cin, cout
        fan_in = np.array([len(self.table[j]) for _, j in pairs], dtype=np.float32) * self.k * self.k
        # The paper draws weights uniformly in +-2.4 / fan_in.
        lim = 2.4 / fan_in
        self.w = self.add_weight(
            name="kernel",
            shape=(self.k * self.k, len(pairs)),
            initializer=lambda shape, dtype=None: tf.random.uniform(shape, -1.0, 1.0, seed=SEED) * lim,
        )
        self.b = self.add_weight(name="bias", shape=(cout,), initializer="zeros")

    def call(self, x):
        kernel = tf.reshape(tf.matmul(self.w, self.place), (self.k, self.k, self.cin, self.cout))
        return lecun_tanh(tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + self.b)

    def get_config(self):
        return {**super().get_config(), "table": self.table, "kernel_size": self.k}


def lenet5() -> keras.Model:
    x = keras.Input((32, 32, 1), name="images")
    h = keras.layers.Conv2D(6, 5, activation=lecun_tanh, name="C1")(x)
    h = Subsampling(name="S2")(h)
    h = SparseConv(C3_TABLE, name="C3")(h)
    h = Subsampling(name="S4")(h)
    h = keras.layers.Conv2D(120, 5, activation=lecun_tanh, name="C5")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(84, activation=lecun_tanh, name="F6")(h)
    y = keras.layers.Dense(10, name="output")(h)
    return keras.Model(x, y, name="lenet5")


def digits_split():
    """scikit-learn digits as uint8 32x32 images 0..255, split as the zoo fixes it.

    Returns (x_train, x_test, y_train, y_test); images uint8 [N,32,32], labels int64 [N].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    img8 = d.images.astype(np.float64)  # [1797, 8, 8], 0..16
    img32 = np.kron(img8, np.ones((4, 4)))  # nearest-neighbour upscale to 32x32
    img32 = np.clip(np.round(img32 * 255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = d.target.astype(np.int64)
    return train_test_split(img32, labels, test_size=0.25, random_state=0, stratify=labels)


def to_model_input(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N,32,32] pixels -> float32 [N,32,32,1] model input (pixel * scale, mean 0, std 1)."""
    return (images_u8.astype(np.float32) * np.float32(SCALE))[..., None]


def train(model: keras.Model, x_train, y_train, epochs: int = 15, batch: int = 32, shift: int = 2) -> None:
    """Adam with cosine learning-rate decay on softmax cross-entropy, whole epochs in one tf.function.

    Each batch is shifted by a random (dy, dx) in [-shift, shift] pixels (zero fill), a light
    form of the paper's distortions. About 10 s on two busy cores.
    """
    x = tf.constant(to_model_input(x_train))
    y = tf.constant(y_train)
    n = int(x.shape[0])
    steps = n // batch
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, epochs * steps))
    opt.build(model.trainable_variables)
    xpad = tf.pad(x, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
    gen = tf.random.Generator.from_seed(SEED)

    @tf.function
    def epoch(perm):
        for i in tf.range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            d = gen.uniform([2], 0, 2 * shift + 1, dtype=tf.int32)
            xb = tf.gather(xpad, idx)[:, d[0] : d[0] + 32, d[1] : d[1] + 32, :]
            yb = tf.gather(y, idx)
            with tf.GradientTape() as tape:
                logits = model(xb, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        epoch(tf.constant(rng.permutation(n).astype(np.int32)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def build(variant: str) -> common.Exportable:
    L.check_variant(variant)  # tiny and full are the same 60k-parameter network
    L.seed(SEED)
    model = lenet5()
    x_train, x_test, y_train, y_test = digits_split()
    train(model, x_train, y_train)
    acc = accuracy(model(to_model_input(x_test), training=False).numpy(), y_test)
    if acc < 0.95:
        raise RuntimeError(f"LeNet-5 digits test accuracy {acc:.4f} < 0.95")

    def fn(images):
        return {"logits": model(images, training=False)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, 32, 32, 1], tf.float32)})

    def golden(rng):
        # Real test digits, so the golden output is meaningful (first 8 test images).
        return {"images": to_model_input(x_test[:8])}

    spec = L.spec(
        "classify",
        "LeNet-5",
        variant,
        L.image_input("images", 32, 32, 1, mean=[0.0], std=[1.0], scale=SCALE),
        {"logits": "logits", "softmax": True},
        labels=[str(i) for i in range(10)],
    )
    m = common.Exportable(
        name="lenet5",
        keras_model=model,
        serve=serve,
        spec=spec,
        golden_inputs=golden,
        extra_files={
            "golden/digits_test_images.npy": np.ascontiguousarray(x_test.astype(np.uint8)),
            "golden/digits_test_labels.npy": np.ascontiguousarray(y_test.astype(np.int64)),
        },
    )
    m.test_accuracy = acc  # measured at build time on the held-out split (not exported)
    return m
