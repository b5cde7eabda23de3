"""Writes the small SavedModels and reference files that tfmodels' Go tests use.

    python tfmodels/testdata/make_fixtures.py <out dir>

<out>/multi/ is one SavedModel with a variable and several signatures:
  serving_default  x float32 [None,3], y float32 [None,3] -> sum = x*w + y, prod = x*y
  types            u8 uint8 [None,4], i32 int32 [None], i64 int64 [None], s string [None]
                   -> u8_sum int32 [None], i32_sq int32, i64_neg int64, s_len int64, s_upper string
  fixed_batch      x float32 [1,4] -> twice float32 [1,4]
  unknown_rank     x float32 (any rank) -> same
<out>/multi_golden/ holds inputs and Python TensorFlow's outputs (.npy; strings as .txt lines).
<out>/bad_signature/ is multi with the fixed_batch signature's input pointing
  at an operation the graph does not have.
<out>/configproto.bin is tf.compat.v1.ConfigProto(intra_op_parallelism_threads=3,
  inter_op_parallelism_threads=2, use_per_session_threads=True) serialised, the
  reference for tfmodels' own ConfigProto encoder.
"""
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf


class Multi(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable([1.5, -2.0, 0.25], dtype=tf.float32, name="w")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None, 3], tf.float32, name="y")])
    def default(self, x, y):
        return {"sum": x * self.w + y, "prod": x * y}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.uint8, name="u8"),
                                  tf.TensorSpec([None], tf.int32, name="i32"),
                                  tf.TensorSpec([None], tf.int64, name="i64"),
                                  tf.TensorSpec([None], tf.string, name="s")])
    def types(self, u8, i32, i64, s):
        return {
            "u8_sum": tf.reduce_sum(tf.cast(u8, tf.int32), axis=1),
            "i32_sq": i32 * i32,
            "i64_neg": -i64,
            "s_len": tf.cast(tf.strings.length(s), tf.int64),
            "s_upper": tf.strings.upper(s),
        }

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def fixed_batch(self, x):
        return {"twice": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
    def unknown_rank(self, x):
        return {"same": tf.identity(x)}


def main(out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    m = Multi()
    path = os.path.join(out, "multi")
    tf.saved_model.save(m, path, signatures={
        "serving_default": m.default, "types": m.types,
        "fixed_batch": m.fixed_batch, "unknown_rank": m.unknown_rank})

    loaded = tf.saved_model.load(path)
    g = os.path.join(out, "multi_golden")
    os.makedirs(g)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = rng.standard_normal((5, 3)).astype(np.float32)
    res = loaded.signatures["serving_default"](x=tf.constant(x), y=tf.constant(y))
    for k, v in {"x": x, "y": y, "sum": res["sum"].numpy(), "prod": res["prod"].numpy()}.items():
        np.save(os.path.join(g, f"{k}.npy"), v)

    u8 = rng.integers(0, 256, (3, 4)).astype(np.uint8)
    i32 = np.array([-7, 0, 46340], np.int32)
    i64 = np.array([1 << 40, -5, 0], np.int64)
    s = ["edge", "", "ünïcode and a string longer than twenty-two bytes"]
    res = loaded.signatures["types"](u8=u8, i32=i32, i64=i64, s=tf.constant(s))
    for k, v in {"u8": u8, "i32": i32, "i64": i64, "u8_sum": res["u8_sum"].numpy(),
                 "i32_sq": res["i32_sq"].numpy(), "i64_neg": res["i64_neg"].numpy(),
                 "s_len": res["s_len"].numpy()}.items():
        np.save(os.path.join(g, f"{k}.npy"), v)
    with open(os.path.join(g, "s.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(s) + "\n")
    with open(os.path.join(g, "s_upper.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(b.decode() for b in res["s_upper"].numpy()) + "\n")

    from tensorflow.core.protobuf import saved_model_pb2

    bad = os.path.join(out, "bad_signature")
    shutil.copytree(path, bad)
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(bad, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    sm.meta_graphs[0].signature_def["fixed_batch"].inputs["x"].name = "no_such_op:0"
    with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
        f.write(sm.SerializeToString())

    cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=3, inter_op_parallelism_threads=2,
                                   use_per_session_threads=True)
    with open(os.path.join(out, "configproto.bin"), "wb") as f:
        f.write(cfg.SerializeToString())
    print(f"wrote fixtures to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tfmodels/testdata/fixtures")
