"""The Python side of make bench-security's start table: what a user would
otherwise run to serve a model, from exec to ready. It imports TensorFlow,
loads the SavedModel given, calls its serving signature once on zeros, and
prints "ready"; bench/security times it from exec to that line."""
import sys

import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
fn = model.signatures["serving_default"]
_, inputs = fn.structured_input_signature
args = {name: tf.zeros([d if d is not None else 1 for d in spec.shape], spec.dtype) for name, spec in inputs.items()}
fn(**args)
print("ready", flush=True)
