"""The Python contestant of `make bench-e2e`: what a user would otherwise write.

A classification service with paho-mqtt 2.x and TensorFlow: it subscribes to
<prefix>/in/frames (QoS 1), and for each message decodes the PNG or JPEG
(PIL), preprocesses it exactly as the model's edgeinfer.toml says (the
classify plugin's rules: bilinear resize with tf.image.resize when the size
differs, luma for one channel, (v * scale - mean) / std), runs the
SavedModel's signature (tf.saved_model.load(dir).signatures[...]), applies
softmax and top-k and publishes a JSON result (QoS 1) on
<prefix>/classify/result, the same topics edgeinferd uses for a sensor
"frames" and a pipeline "classify". The result carries the message's number
(seq, from 1, in arrival order, as edgeinferd's does), its own timings in ms
and the output {"top": [{"label", "index", "score"}, ...]}.

Everything runs in paho's network loop (the message callback), one message
at a time. When subscribed it prints one JSON line with its versions on
stdout (the driver waits for it); SIGTERM disconnects and exits 0.
"""
import argparse
import io
import json
import os
import signal
import socket
import sys
import time
import tomllib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True, help="host:port")
    ap.add_argument("--model", required=True, help="the model version directory")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: TensorFlow's choice)")
    args = ap.parse_args()

    import numpy as np
    import paho.mqtt
    import paho.mqtt.client as mqtt
    import tensorflow as tf
    from PIL import Image

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    with open(os.path.join(args.model, "edgeinfer.toml"), "rb") as f:
        man = tomllib.load(f)
    inp, labels = man["input"], man["labels"]
    fn = tf.saved_model.load(args.model).signatures[man["signature"]]
    size = (inp["height"], inp["width"])
    mean = np.array(inp["mean"], np.float32)
    std = np.array(inp["std"], np.float32)
    luma = np.array([0.299, 0.587, 0.114])

    def classify(payload):
        t0 = time.perf_counter()
        rgb = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"), np.float32)
        t1 = time.perf_counter()
        if rgb.shape[:2] != size:
            rgb = tf.image.resize(rgb, size, method="bilinear", antialias=False).numpy()
        if inp["channels"] == 1:
            rgb = (rgb @ luma).astype(np.float32)[..., None]
        x = (rgb * np.float32(inp["scale"]) - mean) / std
        t2 = time.perf_counter()
        logits = fn(**{inp["key"]: tf.constant(x[None])})[man["output"]["logits"]].numpy()[0]
        t3 = time.perf_counter()
        scores = logits.astype(np.float64)
        if man["output"]["softmax"]:
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        top = [{"label": labels[i], "index": int(i), "score": float(scores[i])}
               for i in np.argsort(-scores, kind="stable")[:args.top_k]]
        t4 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1e3, 3)
        timings = {"decode": ms(t0, t1), "preprocess": ms(t1, t2), "inference": ms(t2, t3),
                   "postprocess": ms(t3, t4), "total": ms(t0, t4)}
        return {"top": top}, timings

    warm = io.BytesIO()
    Image.new("RGB", size[::-1]).save(warm, format="PNG")
    classify(warm.getvalue())

    in_topic = f"{args.prefix}/in/frames"
    result_topic = f"{args.prefix}/classify/result"
    seq = 0

    def on_connect(client, userdata, flags, reason_code, properties):
        # paho leaves Nagle's algorithm on: a result or an ack written right
        # after another small packet would wait for the broker's delayed ACK
        # (up to 40 ms on Linux). Go's net package turns it off by default.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(in_topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        print(json.dumps({"python": sys.version.split()[0], "tensorflow": tf.__version__,
                          "paho_mqtt": paho.mqtt.__version__}), flush=True)

    def on_message(client, userdata, msg):
        nonlocal seq
        seq += 1
        output, timings = classify(msg.payload)
        result = {"schema": 1, "seq": seq, "source": f"{msg.topic}#{seq}", "timings_ms": timings, "output": output}
        client.publish(result_topic, json.dumps(result), qos=1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"python-service-{os.getpid()}")
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    host, port = args.broker.rsplit(":", 1)
    client.connect(host, int(port))
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()


if __name__ == "__main__":
    main()
