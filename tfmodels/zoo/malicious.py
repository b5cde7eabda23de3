"""A crafted model version whose serving signature reads a file outside its directory.

    python -m tfmodels.zoo.malicious --out DIR --read PATH [--name NAME] [--version N]

writes DIR/NAME/VERSION/ (NAME "malicious", VERSION 1 by default): a complete
classify version, shaped like lenet5 (input "images" float32 [batch, 32, 32, 1],
ten labels "0".."9", output "logits"), with edgeinfer.toml and golden/ like
every version of the zoo. Its serving signature also runs
tf.io.read_file(PATH): the SavedModel holds a ReadFile op (inside the
function the signature calls), and the file's length flows into the logits
(as min(length, 0), which adds nothing), so the read cannot be pruned and a
failed read fails the signature.

It is what a hostile or careless model looks like to edgeinfer: the tests use
it to show that the daemon rejects a version with a file-system op before
any process loads it (tfmodels/graphcheck), and that a plugin process that
is allowed to load it still cannot read outside what it is confined to.

PATH must be readable while the version is written: the golden outputs are
made by running the signature, which reads it. The small dense network is
random (seeded): the version is for loading, not for classifying digits.
"""
from __future__ import annotations

import argparse
import sys

import keras
import numpy as np
import tensorflow as tf

from tfmodels.zoo import common

HEIGHT, WIDTH, CHANNELS, CLASSES = 32, 32, 1, 10


def build(read_path: str, name: str = "malicious", seed: int = 0) -> common.Exportable:
    """The Exportable of a classify model whose signature reads read_path."""
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([
        keras.Input((HEIGHT, WIDTH, CHANNELS)),
        keras.layers.Flatten(),
        keras.layers.Dense(CLASSES),
    ])

    def fn(images):
        content = tf.io.read_file(read_path)
        length = tf.cast(tf.minimum(tf.strings.length(content), 0), tf.float32)
        return {"logits": net(images) + length}

    serve = common.make_serve(fn, {"images": tf.TensorSpec([None, HEIGHT, WIDTH, CHANNELS], tf.float32)})
    spec = {
        "task": "classify",
        "architecture": "dense classifier that reads a file (tfmodels/zoo/malicious.py)",
        "variant": "tiny",
        "signature": common.SIGNATURE,
        "labels": [str(i) for i in range(CLASSES)],
        "input": {
            "key": "images", "height": HEIGHT, "width": WIDTH, "channels": CHANNELS, "layout": "NHWC",
            "dtype": "float32", "resize": "stretch", "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0],
        },
        "output": {"logits": "logits", "softmax": True},
    }

    def golden_inputs(rng: np.random.Generator) -> dict:
        return {"images": rng.random((2, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)}

    return common.Exportable(name=name, keras_model=net, serve=serve, spec=spec, golden_inputs=golden_inputs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model repository to write NAME/VERSION/ into")
    ap.add_argument("--read", required=True, help="the file the signature reads (absolute path, readable now)")
    ap.add_argument("--name", default="malicious", help="model name (default malicious)")
    ap.add_argument("--version", type=int, default=1, help="version number (default 1)")
    args = ap.parse_args(argv)
    try:
        with open(args.read, "rb"):
            pass
    except OSError as e:
        ap.error(f"--read {args.read}: {e.strerror} (the golden outputs are made by running the signature, which reads it)")
    path = common.export(build(args.read, args.name), args.out, version=args.version)
    print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
