"""Python TensorFlow references for the classify plugin's Go tests.

A frame is a file of packed RGB bytes (height x width x 3). Outputs are .npy.

  reference.py resize FRAME WIDTH HEIGHT SCALE OUT_DIR WxH...
      for each size: tf.image.resize(frame, (H, W), "bilinear",
      antialias=False) * SCALE -> OUT_DIR/resize_WxH.npy, float32 [H, W, 3]

  reference.py classify MODEL_DIR FRAME WIDTH HEIGHT OUT_DIR
      the frame preprocessed as MODEL_DIR/edgeinfer.toml says (stretch resize,
      gray or RGB, scale, mean, std) -> OUT_DIR/input.npy [1, H, W, C], and
      the signature's scores for it (softmaxed if output.softmax)
      -> OUT_DIR/scores.npy [labels]
"""

import os
import sys
import tomllib

import numpy as np
import tensorflow as tf


def read_frame(path, width, height):
    return np.fromfile(path, dtype=np.uint8).reshape(int(height), int(width), 3)


def resize(frame, width, height):
    return tf.image.resize(frame[None], (height, width), method="bilinear", antialias=False)[0]


def cmd_resize(frame_path, width, height, scale, out_dir, *sizes):
    frame = read_frame(frame_path, width, height)
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        out = resize(frame, w, h) * np.float32(scale)
        np.save(os.path.join(out_dir, f"resize_{size}.npy"), out.numpy().astype(np.float32))


def cmd_classify(model_dir, frame_path, width, height, out_dir):
    with open(os.path.join(model_dir, "edgeinfer.toml"), "rb") as f:
        man = tomllib.load(f)
    inp, outp = man["input"], man["output"]
    x = resize(read_frame(frame_path, width, height), inp["width"], inp["height"])
    if inp["channels"] == 1:
        x = tf.tensordot(x, tf.constant([0.299, 0.587, 0.114]), axes=1)[..., None]
    x = (x * inp["scale"] - inp["mean"]) / inp["std"]
    x = tf.cast(x, tf.float32)[None]
    model = tf.saved_model.load(model_dir)
    scores = model.signatures[man["signature"]](**{inp["key"]: x})[outp["logits"]]
    if outp.get("softmax"):
        scores = tf.nn.softmax(scores)
    np.save(os.path.join(out_dir, "input.npy"), x.numpy())
    np.save(os.path.join(out_dir, "scores.npy"), scores[0].numpy().astype(np.float32))


if __name__ == "__main__":
    commands = {"resize": cmd_resize, "classify": cmd_classify}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
