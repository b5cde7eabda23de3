"""Python references for the embed plugin's Go tests.

  reference.py embed MODEL_DIR FRAME WIDTH HEIGHT OUT [FRAME WIDTH HEIGHT OUT ...]
      each frame (a file of packed RGB bytes, height x width x 3) brought to
      the model's input as MODEL_DIR/edgeinfer.toml says (tf.image.resize
      bilinear to the input size, then scale, mean, std) and run through the
      signature: its raw output.embedding -> OUT (.npy, float32 [dim]); a gray
      model gets luma, a Siamese model's pair input (input.pair_key) zeros

  reference.py decide IN.json OUT.json
      the numpy decisions of tfmodels/zoo/identities.py on the plugin's
      embeddings. IN: {"gallery": [[...]], "gallery_ids": [int], "probes":
      [[...]], "threshold": t, "cluster_threshold": c}. OUT: {"ids": [int,
      -1 unknown], "distances": [...], "clusters": [int]}: identify() of
      every probe, and online_clusters() of the probes it left unknown, in
      their order.

  reference.py badmodel OUT_DIR
      a tiny embed model version (SavedModel and edgeinfer.toml) whose
      embedding of an 8 x 8 RGB image x in [0, 1] is
      relu(mean(x) - 0.5) * (1 + 0 * log(mean(green))): a zero vector for a
      dark image, NaN for one with no green at all, finite otherwise (not
      normalised: the plugin must normalise it)

TensorFlow is imported only by `embed` and `badmodel`.
"""

import json
import os
import sys
import tomllib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "..")))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..", "classify", "testdata")))


def cmd_embed(model_dir, *frames):
    import tensorflow as tf
    from reference import read_frame, resize  # plugins/classify/testdata: the same resize

    with open(os.path.join(model_dir, "edgeinfer.toml"), "rb") as f:
        man = tomllib.load(f)
    inp = man["input"]
    model = tf.saved_model.load(model_dir).signatures[man["signature"]]
    for i in range(0, len(frames), 4):
        frame_path, width, height, out = frames[i:i + 4]
        x = resize(read_frame(frame_path, width, height), inp["width"], inp["height"])
        if inp["channels"] == 1:  # luma, as the plugin feeds a gray model
            x = tf.reduce_sum(x * [0.299, 0.587, 0.114], axis=-1, keepdims=True)
        x = tf.cast((x * inp["scale"] - inp["mean"]) / inp["std"], tf.float32)[None]
        feeds = {inp["key"]: x}
        if inp.get("pair_key"):  # a Siamese model: the first tower, the pair a zero image
            feeds[inp["pair_key"]] = tf.zeros_like(x)
        np.save(out, model(**feeds)[man["output"]["embedding"]][0].numpy().astype(np.float32))


def cmd_badmodel(out_dir):
    import tensorflow as tf

    class Bad(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="images")])
        def serve(self, images):
            m = tf.reduce_mean(images, axis=[1, 2])
            return {"embedding": tf.nn.relu(m - 0.5) * (1 + 0 * tf.math.log(m[:, 1:2]))}

    bad = Bad()
    tf.saved_model.save(bad, out_dir, signatures={"serving_default": bad.serve})
    with open(os.path.join(out_dir, "edgeinfer.toml"), "w") as f:
        f.write(BAD_MANIFEST)


BAD_MANIFEST = """task = "embed"
architecture = "test: zero and NaN embeddings"
signature = "serving_default"
[input]
key = "images"
height = 8
width = 8
channels = 3
layout = "NHWC"
dtype = "float32"
resize = "stretch"
scale = 0.00392156862745098
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]
[output]
embedding = "embedding"
dim = 3
"""


def cmd_decide(in_path, out_path):
    from tfmodels.zoo import identities

    with open(in_path) as f:
        d = json.load(f)
    probes = np.asarray(d["probes"], np.float64)
    ids, dist = identities.identify(probes, np.asarray(d["gallery"], np.float64), d["gallery_ids"], d["threshold"])
    clusters = identities.online_clusters(probes[ids == -1], d["cluster_threshold"]) if (ids == -1).any() else []
    with open(out_path, "w") as f:
        json.dump({"ids": [int(i) for i in ids], "distances": [float(x) for x in dist],
                   "clusters": [int(c) for c in clusters]}, f)


if __name__ == "__main__":
    commands = {"embed": cmd_embed, "badmodel": cmd_badmodel, "decide": cmd_decide}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
