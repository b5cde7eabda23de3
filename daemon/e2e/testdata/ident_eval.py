"""The held-out identity set for the embed plugin's tests (and face scenes for the chain
detect -> crop -> embed), and its scoring.

    ident_eval.py write DIR [PER_ID [SCENES]]
        writes the open-set protocol of tfmodels.zoo.identities into DIR:
        gallery/   GALLERY_PER_ID images (gallery seed) of each HELDOUT_IDS
                   identity, one folder per identity (identities.write_gallery)
        probes/    PER_ID (default PROBE_PER_ID) images (probe seed) of each
                   HELDOUT_IDS and DISTRACTOR_IDS identity, NNNN.png in
                   identities.probe_order, and labels.json
        newbie/    images of NEWBIE (a distractor, in no gallery): enrol/ the
                   gallery seed's first 5, probe/ the probe seed's first 5
        scenes/    with SCENES > 0: the first SCENES held-out face scenes of
                   tfmodels.zoo.facescenes (128x128, 1-3 heads of the gallery's
                   identities and 0-3 unlabelled distractors each: plain discs,
                   discs with one or two face parts, squares, triangles),
                   NNNN.png and labels.json (facescenes.write_dir: each head's
                   identity and disc box, each distractor's kind and box, and the
                   crop margin)

    ident_eval.py score DIR RESULTS
        RESULTS is a JSON object, each output as the embed plugin publishes it
        (with "embedding": true):
        {"threshold": t, "cluster_threshold": c,
         "gallery": {"id1003/000.png": output, ...}     the gallery images' embeddings
         "probes": {"0000.png": output, ...}            identified against the gallery
         "passes": [[{"image": "0000.png", "output": output}, ...], ...]}
                                                        clustered, in arrival order; the
                                                        passes continue one state
        Any of gallery+probes and passes may be left out. Prints
        {"identification": {"probes", "enrolled", "closed_set_accuracy"
           (top[0] is the probe's identity, enrolled probes), "open_set_accuracy"
           (identity, or null for a distractor), "mismatches" (probes whose
           published identity differs from identities.identify on the published
           embeddings), "max_distance_error" (published distance vs numpy's)},
         "clustering": {"ari" (sklearn, first pass vs the true identities), "clusters",
           "identities", "mismatches" (ids differing from identities.online_clusters
           over all passes in order), "stable" (share of images of the last pass
           with their first pass's id), "images"}}

Nothing here shares code with the plugin: the truth is what identities.py drew,
the references are its NumPy identify and online_clusters, the ARI sklearn's.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from tfmodels.zoo import facescenes  # noqa: E402
from tfmodels.zoo import identities as I  # noqa: E402
import scriptcli  # noqa: E402

NEWBIE = 1025


def write(dir: str, per_id: int = I.PROBE_PER_ID, scenes: int = 0) -> None:
    I.write_gallery(os.path.join(dir, "gallery"), I.HELDOUT_IDS, I.GALLERY_PER_ID, I.GALLERY_SEED)
    ids = list(I.HELDOUT_IDS) + list(I.DISTRACTOR_IDS)
    I.write_probes(os.path.join(dir, "probes"), ids, per_id, I.PROBE_SEED)
    for sub, seed in (("enrol", I.GALLERY_SEED), ("probe", I.PROBE_SEED)):
        d = os.path.join(dir, "newbie", sub)
        os.makedirs(d, exist_ok=True)
        for i in range(5):
            I._save(os.path.join(d, f"{i:03d}.png"), I.image(NEWBIE, i, seed))
    if scenes > 0:
        images, heads, distractors = facescenes.generate_scenes(scenes, "heldout")
        facescenes.write_dir(os.path.join(dir, "scenes"), images, facescenes.objects(heads), distractors)


def number(name: str) -> int:
    if not name.startswith("id"):
        raise SystemExit(f"identity {name!r} is not identities.py's idNNNN")
    return int(name[2:])


def embedding(output: dict, what: str) -> np.ndarray:
    e = output.get("embedding")
    if not e:
        raise SystemExit(f"{what}: no embedding in the output (the pipeline needs embedding = true)")
    return np.asarray(e, np.float64)


def identification(dir: str, res: dict, truth: dict) -> dict:
    gallery, probes, thr = res["gallery"], res["probes"], float(res["threshold"])
    if not gallery:
        raise SystemExit("no gallery embedding")
    names = sorted(gallery)
    g = np.stack([embedding(gallery[n], n) for n in names])
    gids = [number(n.split("/")[0]) for n in names]
    missing = [f for f in truth if f not in probes]
    if missing:
        raise SystemExit(f"no result for {len(missing)} probes, e.g. {missing[:3]}")
    files = sorted(truth)
    p = np.stack([embedding(probes[f], f) for f in files])
    want, dist = I.identify(p, g, gids, thr)
    enrolled = set(I.HELDOUT_IDS)
    n_enrolled = rank1 = open_ok = mismatches = 0
    err = 0.0
    for k, f in enumerate(files):
        out, label = probes[f], number(truth[f])
        got = -1 if out["identity"] is None else number(out["identity"])
        top = out["top"][0]
        if label in enrolled:
            n_enrolled += 1
            rank1 += int(number(top["name"]) == label)
        open_ok += int(got == (label if label in enrolled else -1))
        mismatches += int(got != want[k])
        err = max(err, abs(top["distance"] - float(dist[k])))
        if got != -1:
            err = max(err, abs(out["distance"] - float(dist[k])))
    return {"probes": len(files), "enrolled": n_enrolled, "closed_set_accuracy": rank1 / n_enrolled,
            "open_set_accuracy": open_ok / len(files), "mismatches": mismatches, "max_distance_error": err}


def clustering(dir: str, res: dict, truth: dict) -> dict:
    passes, thr = res["passes"], float(res["cluster_threshold"])
    flat = [r for p in passes for r in p]
    for r in flat:
        if r["image"] not in truth:
            raise SystemExit(f"{r['image']}: not a probe of {dir}")
        if "cluster" not in r["output"]:
            raise SystemExit(f"{r['image']}: no cluster in {r['output']}")
    want = I.online_clusters(np.stack([embedding(r["output"], r["image"]) for r in flat]), thr)
    got = np.asarray([r["output"]["cluster"]["id"] for r in flat])
    first = passes[0]
    ids = [number(truth[r["image"]]) for r in first]
    ari = adjusted_rand_score(ids, [r["output"]["cluster"]["id"] for r in first])
    before = {r["image"]: r["output"]["cluster"]["id"] for r in first}
    last = passes[-1]
    stable = sum(before.get(r["image"]) == r["output"]["cluster"]["id"] for r in last) / len(last)
    return {"ari": float(ari), "clusters": len(set(before.values())), "identities": len(set(ids)),
            "mismatches": int((got != want).sum()), "stable": stable, "images": len(flat)}


def score(dir: str, res: dict) -> dict:
    with open(os.path.join(dir, "probes", "labels.json")) as f:
        truth = {e["image"]: e["identity"] for e in json.load(f)["files"]}
    out = {}
    if "probes" in res:
        out["identification"] = identification(dir, res, truth)
    if "passes" in res:
        out["clustering"] = clustering(dir, res, truth)
    return out


if __name__ == "__main__":
    sys.exit(scriptcli.run(__doc__, ("write", write, 0, 2), score))
