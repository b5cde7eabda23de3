"""Fast tests of train_embed.py: the triplet mining and loss, the batch samplers, the Siamese
input preparation, the threshold choices on hand-made embeddings, and a smoke training of both
models through the CLI whose export the Go manifest rules accept (no real training here;
train_embed.py prints its own held-out metrics).

    .venv/bin/python -m pytest -q tfmodels/zoo/test_train_embed.py
"""
from __future__ import annotations

import json
import os
import re
import tomllib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfmodels.zoo import identities as I  # noqa: E402
from tfmodels.zoo import train_embed as T  # noqa: E402

# ------------------------------------------------------------------ mining and loss

# points on a line (x, 0); labels 0 0 1 1 2
LINE = np.array([[0.0, 0], [1.0, 0], [0.5, 0], [3.0, 0], [2.1, 0]], np.float32)
LINE_LABELS = np.array([0, 0, 1, 1, 2])


def test_semi_hard_mining_hand_computed():
    a, p, n = (x.numpy() for x in T.mine_triplets(tf.constant(LINE), tf.constant(LINE_LABELS)))
    # every ordered same-label pair is an anchor-positive pair; label 2 has no positive
    np.testing.assert_array_equal(a, [0, 1, 2, 3])
    np.testing.assert_array_equal(p, [1, 0, 3, 2])
    # anchor 0 (d_ap 1): negatives at 0.25 (hard), 9, 4.41 -> the nearest farther than 1: row 4
    # anchor 1 (d_ap 1): 0.25, 4, 1.21 -> row 4 (1.21), not the hard row 2 nor row 3
    # anchor 2 (d_ap 6.25): 0.25, 0.25, 2.56, none farther -> the farthest: row 4
    # anchor 3 (d_ap 6.25): 9, 4, 0.81 -> row 0 (9)
    np.testing.assert_array_equal(n, [4, 4, 4, 0])


def test_batch_triplet_loss_hand_computed():
    # triplet terms [d_ap - d_an + 0.2]_+: 1 - 4.41, 1 - 1.21, 6.25 - 2.56, 6.25 - 9 (+ 0.2)
    got = float(T.batch_triplet_loss(tf.constant(LINE), tf.constant(LINE_LABELS), 0.2))
    assert got == pytest.approx((0 + 0 + 3.89 + 0) / 4, rel=1e-5)


def test_batch_triplet_loss_gradient_pulls_positives_together():
    e = tf.Variable(LINE)
    with tf.GradientTape() as tape:
        loss = T.batch_triplet_loss(e, tf.constant(LINE_LABELS), 0.2)
    g = tf.convert_to_tensor(tape.gradient(loss, e)).numpy()
    # only the active triplet (2, 3, 4) contributes: anchor 2 moves toward 3, 3 toward 2, 4 away from 2
    assert g[2, 0] < 0 and g[3, 0] > 0 and g[4, 0] < 0
    np.testing.assert_array_equal(g[:2], 0)


def test_pk_batch():
    rng = np.random.default_rng(0)
    idx = T.pk_batch(rng, n_ids=10, per_id=6, p=4, k=3)
    ids = idx // 6
    assert idx.shape == (12,) and (idx < 60).all()
    assert len(set(ids)) == 4 and all((ids[i * 3:(i + 1) * 3] == ids[i * 3]).all() for i in range(4))
    assert all(len(set(idx[i * 3:(i + 1) * 3])) == 3 for i in range(4)), "k distinct images"


def test_pair_batch():
    rng = np.random.default_rng(0)
    left, right, same = T.pair_batch(rng, n_ids=5, per_id=4, n=200)
    np.testing.assert_array_equal(same, [1.0] * 100 + [0.0] * 100)
    assert (left // 4 == right // 4)[:100].all() and (left != right)[:100].all()
    assert (left // 4 != right // 4)[100:].all()
    assert left.max() < 20 and right.max() < 20


def test_verification_pairs():
    ids = np.repeat(np.arange(10), 3)
    left, right, same = T.verification_pairs(ids, 100, 0)
    assert same.sum() == 50 and len(same) == 100
    np.testing.assert_array_equal(ids[left] == ids[right], same)
    assert (left != right).all()


# ------------------------------------------------------------------ inputs


def test_siamese_input_is_resized_luma():
    img = np.zeros((2, 64, 64, 3), np.uint8)
    img[0] = [255, 0, 0]
    img[1, :, :32] = 200  # grey left half
    x = T.siamese_input(img).numpy()
    assert x.shape == (2, 105, 105, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 0.299, atol=1e-6)
    np.testing.assert_allclose(x[1, :, :50, 0], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(x[1, :, 55:, 0], 0, atol=1e-6)
    # bilinear as tf.image.resize (and the Go side's imageprep), then luma
    want = tf.image.resize(img[1:].astype(np.float32), [105, 105]).numpy()[..., 0] / 255
    np.testing.assert_allclose(x[1, ..., 0], want[0], atol=1e-6)


def test_facenet_input():
    x = T.facenet_input(np.array([[[[0, 255, 51]]]], np.uint8))
    np.testing.assert_allclose(x.ravel(), [-1.0, 1.0, -0.6], atol=1e-6)


# ------------------------------------------------------------------ thresholds


def _blobs(ids, per, spread, seed):
    """Unit vectors in 8-d around one random direction per identity."""
    rng = np.random.default_rng(seed)
    centres = {k: rng.normal(size=8) for k in ids}
    e = np.stack([centres[k] / np.linalg.norm(centres[k]) + rng.normal(0, spread, 8) for k in ids for _ in range(per)])
    return e / np.linalg.norm(e, axis=1, keepdims=True), np.repeat(ids, per)


def test_identification_threshold_separates_distractors():
    emb, lab = _blobs(np.arange(6), 6, 0.05, 0)
    gal = np.arange(36) % 6 < 2  # 2 gallery rows per identity
    enrolled = lab < 4  # identities 4 and 5 are distractors
    g, gi = emb[gal & enrolled], lab[gal & enrolled]
    p, pi = emb[~gal], lab[~gal]
    t = T.identification_threshold(p, pi, g, gi)
    m = T.open_set(p, pi, g, gi, t)
    assert m == {"closed_set_accuracy": 1.0, "open_set_accuracy": 1.0, "enrolled_accepted": 1.0,
                 "distractor_rejection": 1.0}
    # a threshold of 0 rejects everything, 2 accepts everything
    assert T.open_set(p, pi, g, gi, 0.0)["enrolled_accepted"] == 0.0
    assert T.open_set(p, pi, g, gi, 2.0)["distractor_rejection"] == 0.0


def test_clustering_threshold_recovers_blobs():
    emb, lab = _blobs(np.arange(8), 10, 0.05, 1)
    order = I.probe_order(len(emb))
    t, ari = T.clustering_threshold(emb[order], lab[order])
    assert ari == 1.0 and t in T.CLUSTER_GRID
    assert T.CLUSTER_GRID[0] <= t < 1.0


# ------------------------------------------------------------------ smoke training, export, manifest rules


def _manifest_keys() -> dict:
    """The keys tfmodels/manifest/manifest.go decodes, per table ("" = top level): the Go reader
    rejects any other key."""
    path = os.path.join(os.path.dirname(__file__), "..", "manifest", "manifest.go")
    with open(path) as f:
        src = f.read()
    out = {}
    for struct, table in (("Manifest", ""), ("Input", "input"), ("Output", "output"), ("Validation", "validation")):
        body = re.search(r"type " + struct + r" struct \{(.*?)\n\}", src, re.S).group(1)
        out[table] = set(re.findall(r'toml:"(\w+)"', body))
    return out


def test_cache_key_and_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    s = T.Session()
    for name in T.NAMES:
        k = T.cache_key(name)
        assert re.fullmatch(r"[0-9a-f]{16}", k)
        assert s.cached(name) == os.path.join(str(tmp_path), "edgeinfer", "trained", f"{name}-{k}")
        assert T.Session(T.SMOKE).key(name).startswith(k + "-")
    assert T.cache_key(T.FACENET) != T.cache_key(T.SIAMESE)


def test_smoke_training_exports_servable_versions(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "models"
    assert T.main(["--smoke", "--out", str(out)]) == 0
    keys = _manifest_keys()
    for name, task in ((T.FACENET, "embed"), (T.SIAMESE, "siamese")):
        vdir = out / name / "1"
        with open(vdir / "edgeinfer.toml", "rb") as f:
            spec = tomllib.load(f)
        tables = {k for k, v in spec.items() if isinstance(v, dict)}
        assert tables == {"input", "output", "validation"}
        assert set(spec) - tables <= keys[""], f"{name}: unknown top-level keys"
        for table in tables:
            assert set(spec[table]) <= keys[table], f"{name}: unknown keys in [{table}]"
        # the rules Manifest.Validate applies to these tasks
        assert spec["task"] == task and spec["signature"] == "serving_default" and spec["variant"] == "tiny"
        assert "labels" not in spec and spec["validation"]["tolerance"] >= 1e-4
        inp = spec["input"]
        assert inp["layout"] == "NHWC" and inp["dtype"] == "float32" and inp["resize"] == "stretch"
        assert len(inp["mean"]) == len(inp["std"]) == inp["channels"] and inp["scale"] == pytest.approx(1 / 255)
        assert spec["output"]["dim"] > 0
        g = vdir / "golden"
        with open(g / "signatures.json") as f:
            sig = json.load(f)["serving_default"]
        with open(g / "ident_metrics.json") as f:
            metrics = json.load(f)
        assert metrics["name"] == name and metrics["train_seconds"] > 0
        assert os.path.exists(str(tmp_path / "cache" / "edgeinfer" / "trained" / f"{name}-{metrics['key']}.json"))
        gal = np.load(g / "ident_gallery_images.npy")
        gal_ids = np.load(g / "ident_gallery_ids.npy")
        assert gal.shape == (len(I.HELDOUT_IDS) * I.GALLERY_PER_ID, I.SIZE, I.SIZE, 3)
        np.testing.assert_array_equal(gal_ids, np.repeat(list(I.HELDOUT_IDS), I.GALLERY_PER_ID))
        if task == "embed":
            out_spec = spec["output"]
            assert out_spec == {"embedding": "embedding", "dim": 128}
            assert (inp["height"], inp["width"], inp["channels"]) == (64, 64, 3)
            assert inp["mean"] == [0.5] * 3 and inp["std"] == [0.5] * 3
            assert sig["outputs"]["embedding"]["shape"] == [-1, 128]
            x = np.load(g / "input_images.npy")
            np.testing.assert_allclose(x, T.facenet_input(gal[::I.GALLERY_PER_ID][:4]))
            e = np.load(g / "output_embedding.npy")
            np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
            for part in ("identification", "clustering"):
                assert 0 <= metrics[part]["threshold"] <= 2
            assert -1 <= metrics["clustering"]["ari"] <= 1
        else:
            out_spec = spec["output"]
            assert out_spec == {"distance": "distance", "embedding": "embedding_left",
                                "pair_embedding": "embedding_right", "dim": 256}
            assert inp["key"] == "left" and inp["pair_key"] == "right"
            assert (inp["height"], inp["width"], inp["channels"]) == (105, 105, 1)
            assert sig["outputs"]["embedding_left"]["shape"] == [-1, 256]
            d = np.load(g / "output_distance.npy")
            assert d[0] == 0.0 and d[1] > 0 and d[2] > 0, "pair 0 is an image with itself"
            np.testing.assert_allclose(np.load(g / "input_left.npy")[0], T.siamese_input(gal[:1]).numpy()[0])
            assert 0 <= metrics["verification"]["accuracy"] <= 1
    # a second run installs from the cache without training
    lines = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert T.main(["--smoke", "--out", str(out), T.SIAMESE]) == 0
    assert not any("parameters" in ln for ln in lines) and any("-> " in ln for ln in lines)
