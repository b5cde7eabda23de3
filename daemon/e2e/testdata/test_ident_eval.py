"""ident_eval scores what it should: embeddings that are the identities
themselves score 1 and agree with numpy's decisions, a published identity or
cluster id other than numpy's is counted, a relabelled clustering keeps its
ARI, and a missing probe or embedding is refused."""
import copy
import json

import numpy as np
import pytest

import ident_eval
from tfmodels.zoo import identities as I


def onehot(name):
    e = np.zeros(128)
    e[ident_eval.number(name) - 1000] = 1.0
    return e.tolist()


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ident"))
    ident_eval.write(d, 2)
    with open(f"{d}/probes/labels.json") as f:
        files = json.load(f)["files"]
    gallery = {f"{I.name(k)}/{i:03d}.png": {"embedding": onehot(I.name(k))}
               for k in I.HELDOUT_IDS for i in range(I.GALLERY_PER_ID)}
    probes, order = {}, []
    for e in files:
        known = ident_eval.number(e["identity"]) in I.HELDOUT_IDS
        top = I.name(1000) if not known else e["identity"]
        probes[e["image"]] = {"identity": e["identity"] if known else None, "distance": 0.0 if known else None,
                              "top": [{"name": top, "distance": 0.0 if known else 2 ** 0.5}],
                              "embedding": onehot(e["identity"])}
    first_seen = {}
    for e in files:
        cid = first_seen.setdefault(e["identity"], len(first_seen) + 1)
        order.append({"image": e["image"], "output": {"cluster": {"id": cid}, "embedding": onehot(e["identity"])}})
    return d, {"threshold": 0.6569, "cluster_threshold": 0.775, "gallery": gallery, "probes": probes, "passes": [order]}


def test_the_identities_themselves_score_one(heldout):
    d, res = heldout
    s = ident_eval.score(d, res)
    i, c = s["identification"], s["clustering"]
    assert (i["probes"], i["enrolled"]) == (60, 40)
    assert i["closed_set_accuracy"] == 1.0 and i["open_set_accuracy"] == 1.0
    assert i["mismatches"] == 0 and i["max_distance_error"] == 0.0
    assert c["ari"] == pytest.approx(1.0) and c["mismatches"] == 0 and (c["clusters"], c["identities"]) == (30, 30)
    assert ident_eval.score(d, dict(res, passes=[res["passes"][0]] * 2))["clustering"]["stable"] == 1.0


def test_decisions_other_than_numpys_are_counted(heldout):
    d, res = heldout
    res = copy.deepcopy(res)
    first = next(f for f, o in res["probes"].items() if o["identity"])
    res["probes"][first]["identity"] = None
    swapped = [dict(r, output=dict(r["output"], cluster={"id": 31 - r["output"]["cluster"]["id"]})) for r in res["passes"][0]]
    s = ident_eval.score(d, dict(res, passes=[swapped]))
    assert s["identification"]["mismatches"] == 1 and s["identification"]["open_set_accuracy"] == pytest.approx(59 / 60)
    assert s["clustering"]["ari"] == pytest.approx(1.0) and s["clustering"]["mismatches"] > 0


def test_a_missing_probe_or_embedding_is_refused(heldout):
    d, res = heldout
    with pytest.raises(SystemExit, match="no result"):
        ident_eval.score(d, dict(res, probes={}))
    bare = [dict(r, output={"cluster": r["output"]["cluster"]}) for r in res["passes"][0]]
    with pytest.raises(SystemExit, match="no embedding"):
        ident_eval.score(d, {"cluster_threshold": 0.775, "passes": [bare]})
