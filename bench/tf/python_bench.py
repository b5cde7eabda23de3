"""The Python side of `make bench-tf`: what a user would otherwise write.

Loads a SavedModel with tf.saved_model.load, takes the first sample of each
golden input (batch 1, the same bytes the Go side feeds), warms up, prints
"ready", then for each line N read from stdin calls the signature function N
times, converting the outputs to numpy as a caller would, and prints one JSON
line {"latencies_ns": [...]}. The Go side alternates rounds of its callers
with rounds of this one, so drift on the machine hits all of them alike.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--signature", default="serving_default")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--intra", type=int, default=0)
    ap.add_argument("--inter", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    fn = tf.saved_model.load(args.model).signatures[args.signature]
    inputs = {}
    for key in fn.structured_input_signature[1]:
        a = np.load(os.path.join(args.model, "golden", f"input_{key}.npy"))
        inputs[key] = tf.constant(a[:1])

    def call():
        return {k: v.numpy() for k, v in fn(**inputs).items()}

    for _ in range(args.warmup):
        call()
    print("ready", flush=True)
    for line in sys.stdin:
        lat = []
        for _ in range(int(line)):
            t = time.perf_counter_ns()
            call()
            lat.append(time.perf_counter_ns() - t)
        print(json.dumps({"latencies_ns": lat}), flush=True)


if __name__ == "__main__":
    main()
