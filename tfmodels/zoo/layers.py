"""Small shared pieces for the classic architectures of the zoo.

Keras 3 functional models cannot apply raw TensorFlow ops to KerasTensors, so
every TF op an architecture needs inside its graph lives in a Layer here. The
module also holds label sets and the edgeinfer.toml builders those
architectures share.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# --------------------------------------------------------------------------
# Label sets

# CIFAR-10 names: the 10 classes of the tiny (32-64 px) classifiers.
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# PASCAL VOC 2012 segmentation classes, index = class id (0 = background).
VOC_LABELS = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

# UCF-101 action classes in classInd.txt order (index = class id - 1).
UCF101_LABELS = [
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
    "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards",
    "BlowDryHair", "BlowingCandles", "BodyWeightSquats", "Bowling", "BoxingPunchingBag",
    "BoxingSpeedBag", "BreastStroke", "BrushingTeeth", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "CuttingInKitchen", "Diving", "Drumming", "Fencing",
    "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "GolfSwing",
    "Haircut", "HammerThrow", "Hammering", "HandstandPushups", "HandstandWalking",
    "HeadMassage", "HighJump", "HorseRace", "HorseRiding", "HulaHoop", "IceDancing",
    "JavelinThrow", "JugglingBalls", "JumpRope", "JumpingJack", "Kayaking", "Knitting",
    "LongJump", "Lunges", "MilitaryParade", "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars",
    "PizzaTossing", "PlayingCello", "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar",
    "PlayingPiano", "PlayingSitar", "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse",
    "PullUps", "Punch", "PushUps", "Rafting", "RockClimbingIndoor", "RopeClimbing", "Rowing",
    "SalsaSpin", "ShavingBeard", "Shotput", "SkateBoarding", "Skiing", "Skijet", "SkyDiving",
    "SoccerJuggling", "SoccerPenalty", "StillRings", "SumoWrestling", "Surfing", "Swing",
    "TableTennisShot", "TaiChi", "TennisSwing", "ThrowDiscus", "TrampolineJumping", "Typing",
    "UnevenBars", "VolleyballSpiking", "WalkingWithDog", "WallPushups", "WritingOnBoard", "YoYo",
]
assert len(UCF101_LABELS) == 101


def imagenet_labels() -> list[str]:
    """Placeholder names for the 1000 ILSVRC classes of the full (benchmark-only) variants.

    The real synset names are not shipped with the zoo (no downloads); the
    full variants carry random weights anyway.
    """
    return [f"imagenet_{i:03d}" for i in range(1000)]


# --------------------------------------------------------------------------
# Variant handling

VARIANTS = ("tiny", "full")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; want one of {VARIANTS}")


def seed(s: int = 0) -> None:
    """Deterministic initialisation: same seed, same weights, same export."""
    keras.utils.set_random_seed(s)


def ch(n: int, div: int) -> int:
    """n channels divided by the variant's width divisor (at least 1)."""
    return max(1, n // div)


# He (Kaiming) normal initialisation keeps activation magnitudes O(1) through
# deep ReLU stacks without batch normalisation, which keeps the golden outputs
# of random-weight models in a range where a 1e-4 absolute tolerance is meaningful.
def he():
    return keras.initializers.HeNormal()


# --------------------------------------------------------------------------
# Layers wrapping TF ops


class LocalResponseNorm(keras.layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012, sec. 3.3).

    b = a / (k + alpha * sum_{n neighbouring maps} a^2) ** beta, with the
    paper's k=2, n=5, alpha=1e-4, beta=0.75 by default. TensorFlow's op uses
    the same (undivided) alpha and depth_radius = n // 2.
    """

    def __init__(self, size=5, bias=2.0, alpha=1e-4, beta=0.75, **kw):
        super().__init__(**kw)
        self.size, self.bias, self.alpha, self.beta = size, bias, alpha, beta

    def call(self, x):
        return tf.nn.local_response_normalization(
            x, depth_radius=self.size // 2, bias=self.bias, alpha=self.alpha, beta=self.beta
        )

    def get_config(self):
        return {**super().get_config(), "size": self.size, "bias": self.bias, "alpha": self.alpha, "beta": self.beta}


class CropLike(keras.layers.Layer):
    """Crops x[:, o:o+H, o:o+W, :] where (H, W) is the spatial size of ref.

    The FCN paper's Crop layer: aligns an upsampled map with a finer one (or
    with the input) at a fixed offset, for any input size.
    """

    def __init__(self, offset=0, **kw):
        super().__init__(**kw)
        self.offset = offset

    def call(self, x, ref):
        s = tf.shape(ref)
        o = self.offset
        return x[:, o : o + s[1], o : o + s[2], :]

    def compute_output_shape(self, x_shape, ref_shape):
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


class L2Normalize(keras.layers.Layer):
    """x / ||x||_2 along the last axis (embeddings on the unit hypersphere)."""

    def call(self, x):
        return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """Conv2DTranspose kernel [size, size, channels, channels] doing per-channel bilinear upsampling.

    FCN initialises its upsampling ("deconvolution") layers this way.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    k = np.zeros((size, size, channels, channels), dtype=np.float32)
    for c in range(channels):
        k[:, :, c, c] = filt
    return k


class FixedBilinearUpsampling(keras.layers.Layer):
    """Transposed convolution (kernel 2s, stride s, 'valid') fixed to per-channel bilinear interpolation.

    Equals Conv2DTranspose(C, 2s, strides=s, use_bias=False, trainable=False) with the diagonal
    kernel of bilinear_kernel(2s, C), but as a depthwise transposed convolution with a constant
    [2s, 2s, C, 1] filter: no variables (FCN-32s's 64x64x21x21 kernel would be 7 MB of zeros
    off the diagonal) and C times fewer multiplications. Output [B, (H+1)s, (W+1)s, C].
    """

    def __init__(self, stride, **kw):
        super().__init__(**kw)
        self.stride = stride

    def build(self, input_shape):
        c = input_shape[-1]
        k = 2 * self.stride
        self.filter = tf.constant(bilinear_kernel(k, 1)[:, :, :, :] * np.ones((1, 1, c, 1), np.float32))

    def call(self, x):
        s = tf.shape(x)
        k = 2 * self.stride
        out = tf.stack([s[0], (s[1] - 1) * self.stride + k, (s[2] - 1) * self.stride + k, s[3]])
        return tf.nn.depthwise_conv2d_backprop_input(out, self.filter, x, [1, self.stride, self.stride, 1], "VALID")

    def compute_output_shape(self, shape):
        f = lambda d: None if d is None else (d + 1) * self.stride  # noqa: E731
        return (shape[0], f(shape[1]), f(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


# --------------------------------------------------------------------------
# BatchNorm statistics for random-weight exports


def calibrate_batchnorm(model, x) -> None:
    """Sets every BatchNormalization's moving statistics from one batch.

    A freshly initialised network has moving mean 0 / variance 1, so at
    inference its activations grow block after block. Running one batch in
    training mode with momentum 0 stores that batch's statistics, which keeps
    the random-weight golden outputs O(1). Trainable weights are not touched.
    """
    bns = [l for l in _all_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(x, training=True)
    for l, m in zip(bns, saved):
        l.momentum = m


def _all_layers(model):
    for l in model.layers:
        yield l
        if isinstance(l, keras.Model):
            yield from _all_layers(l)


# --------------------------------------------------------------------------
# edgeinfer.toml builders

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def image_input(key="images", height=0, width=0, channels=3, mean=None, std=None, resize="stretch", scale=1.0 / 255.0):
    mean = list(mean if mean is not None else (IMAGENET_MEAN if channels == 3 else [0.0]))
    std = list(std if std is not None else (IMAGENET_STD if channels == 3 else [1.0]))
    return {
        "key": key,
        "height": int(height),
        "width": int(width),
        "channels": int(channels),
        "layout": "NHWC",
        "dtype": "float32",
        "resize": resize,
        "scale": float(scale),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def spec(task, architecture, variant, inp, output, labels=None):
    s = {"task": task, "architecture": architecture, "variant": variant, "signature": "serving_default"}
    if labels is not None:
        s["labels"] = list(labels)
    s["input"] = inp
    s["output"] = output
    return s


def classifier(name, architecture, variant, model, size, labels):
    """The Exportable of an RGB image classifier: "images" [N,size,size,3] in, "logits" out."""
    from tfmodels.zoo import common

    def fn(images):
        return {"logits": model(images, training=False)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, size, size, 3], tf.float32)})
    out = spec("classify", architecture, variant, image_input("images", size, size, 3), {"logits": "logits", "softmax": True}, labels)
    return common.Exportable(name=name, keras_model=model, serve=serve, spec=out)


def segmenter(name, architecture, variant, model, size, labels):
    """The Exportable of a segmentation network that takes any input size:
    "images" [N,H,W,3] in, per-pixel "logits" [N,H,W,classes] out; the golden
    input and the edgeinfer.toml default are size x size."""
    from tfmodels.zoo import common

    def fn(images):
        return {"logits": model(images, training=False)}

    def golden(rng: np.random.Generator):
        return {"images": rng.random((2, size, size, 3), dtype=np.float64).astype(np.float32)}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, None, None, 3], tf.float32)})
    out = spec("segment", architecture, variant, image_input("images", size, size, 3), {"logits": "logits", "softmax": True}, labels)
    return common.Exportable(name=name, keras_model=model, serve=serve, spec=out, golden_inputs=golden)
