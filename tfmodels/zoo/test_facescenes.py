"""Fast tests of facescenes.py: each box is the drawn head disc's and the face drawn there is
its identity's, heads keep their crops to themselves and inside the scene, the distractors are
of every kind, never a face, drawn where they say, off the heads and nearly off their crops,
the crop with the margin puts the head at identities.py's scale, scenes are deterministic, and
the splits share neither identities nor scenes.

    .venv/bin/python -m pytest -q tfmodels/zoo/test_facescenes.py
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfmodels.zoo import facescenes as F
from tfmodels.zoo import identities as I

N = 40


@pytest.fixture(scope="module")
def heldout():
    return F.generate_heads(N, "heldout")


@pytest.fixture(scope="module")
def scenes():
    return F.generate_scenes(N, "heldout")


def painted(h: F.Head) -> tuple[np.ndarray, np.ndarray]:
    """The head drawn alone on an empty canvas: (bool [S, S] painted pixels, float [S, S, 3] colours)."""
    canvas = np.full((F.SIZE, F.SIZE, 3), np.nan)
    I.draw(I.pattern(h.identity), canvas, h.cx, h.cy, h.radius, h.phi)
    return ~np.isnan(canvas[..., 0]), canvas


def test_each_box_is_its_disc_and_the_scene_shows_that_identitys_face_there(heldout):
    images, heads = heldout
    _, objects = F.generate(N, "heldout")
    others = list(I.HELDOUT_IDS)
    for img, hs, objs in zip(images, heads, objects):
        assert [o["identity"] for o in objs] == [h.identity for h in hs]
        for h, o in zip(hs, objs):
            disc = h.disc()
            rows, cols = np.nonzero(disc)
            assert o["class"] == 0
            assert o["box"] == (cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0)
            x1, y1, x2, y2 = o["box"]
            assert abs((x2 - x1) - 2 * h.radius) <= 1 and abs((y2 - y1) - 2 * h.radius) <= 1
            mask, colours = painted(h)
            # the parts may reach just past the disc, never far
            pr, pc = np.nonzero(mask)
            slack = 0.15 * h.radius
            assert pc.min() >= x1 - slack and pc.max() + 1 <= x2 + slack
            assert pr.min() >= y1 - slack and pr.max() + 1 <= y2 + slack
            # the scene's pixels there follow this identity's colours (lighting is affine per
            # channel, noise is small beside the colour contrasts), better than any other's
            def fit(k):
                _, c = painted(F.Head(k, h.cx, h.cy, h.radius, h.phi))
                return np.corrcoef(c[mask].ravel(), img[mask].astype(np.float64).ravel())[0, 1]

            own = fit(h.identity)
            assert own > 0.8
            assert own > max(fit(k) for k in others if k != h.identity)


def test_heads_and_their_crops_stay_apart_and_inside_the_scene(heldout):
    _, heads = heldout
    counts = [len(hs) for hs in heads]
    assert min(counts) >= 1 and max(counts) <= F.MAX_HEADS and sum(counts) > 1.5 * N
    for hs in heads:
        assert len({h.identity for h in hs}) == len(hs)
        for h in hs:
            assert F.RADIUS[0] <= h.radius <= F.RADIUS[1] and abs(h.phi) <= I.ROTATION
            x1, y1, x2, y2 = h.crop()
            assert 0 <= x1 and 0 <= y1 and x2 <= F.SIZE and y2 <= F.SIZE
            for o in hs:
                if o is not h:
                    assert not (h.disc() & o.disc()).any()
                    # no pixel of the other disc inside this crop
                    ys, xs = np.nonzero(o.disc())
                    inside = (xs + 0.5 >= x1) & (xs + 0.5 <= x2) & (ys + 0.5 >= y1) & (ys + 0.5 <= y2)
                    assert not inside.any()


def test_the_distractors_are_of_every_kind_and_never_a_face(scenes):
    _, _, extra = scenes
    counts = [len(ds) for ds in extra]
    assert min(counts) >= 0 and max(counts) <= F.MAX_DISTRACTORS and sum(counts) > N
    kinds = {k: [d for ds in extra for d in ds if d.kind == k] for k in F.KINDS}
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    for d in kinds["disc"] + kinds["partial"]:
        # a head's size, rotation and colours, and placed as a head: its crop inside the scene
        assert F.RADIUS[0] <= d.size <= F.RADIUS[1] and abs(d.phi) <= I.ROTATION
        assert all(F.COLOR[0] <= c <= F.COLOR[1] for c in d.color)
        half = d.size * (1 + 2 * F.MARGIN)
        assert half <= d.cx <= F.SIZE - half and half <= d.cy <= F.SIZE - half
    assert all(d.parts == () for d in kinds["disc"] + kinds["square"] + kinds["triangle"])
    # a partial face has one or two parts, never a face's four (nor a face's parts)
    assert {len(d.parts) for d in kinds["partial"]} <= {1, 2}
    faces = {I.pattern(k).parts for k in I.HELDOUT_IDS}
    assert not any(d.parts in faces for d in kinds["partial"])
    for d in kinds["square"] + kinds["triangle"]:
        assert F.SIDE[0] <= d.size <= F.SIDE[1]
        full = d.mask(F.SIZE + 64)  # the same shape on a bigger canvas: nothing cut off
        assert d.mask().sum() == full.sum() > 0


def test_each_distractor_is_drawn_where_its_box_says(scenes):
    _, _, extra = scenes
    for ds in extra:
        for d in ds:
            canvas = np.full((F.SIZE, F.SIZE, 3), np.nan)
            d.draw(canvas)
            painted = ~np.isnan(canvas[..., 0])
            m = d.mask()
            rows, cols = np.nonzero(m)
            assert d.box() == (cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0)
            assert (painted & ~d.reach()).sum() == 0 and (m & ~painted).sum() == 0
            if d.kind == "disc":
                assert abs((cols.max() + 1 - cols.min()) - 2 * d.size) <= 1
            if not d.parts:  # one flat colour on the outline, nothing else
                assert (painted == m).all() and np.allclose(canvas[m], d.color)
            else:  # the parts paint over the disc's colour
                assert not np.allclose(canvas[m], d.color)


def test_distractors_keep_off_the_heads_and_nearly_off_their_crops(scenes):
    _, heads, extra = scenes
    near = 0
    for hs, ds in zip(heads, extra):
        for d in ds:
            r = d.reach()
            for o in ds:
                if o is not d:
                    assert not (r & o.reach()).any()
            for h in hs:
                # nothing it may paint within REACH head radii of the head's centre (the parts)
                assert not (r & F.shapes._raster(0, h.cx, h.cy, 2 * F.REACH * h.radius, 0.0, 0, F.SIZE, 0, F.SIZE)).any()
                x1, y1, x2, y2 = h.crop()
                ys, xs = np.mgrid[0:F.SIZE, 0:F.SIZE] + 0.5
                crop = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)  # the pixels centred in it
                assert (r & crop).sum() <= F.CROP_OVERLAP * crop.sum()
                near += int((r & crop).any())
    assert near > 0  # some do touch a crop


def test_the_crop_with_the_margin_puts_the_head_at_identities_scale():
    assert F.MARGIN == pytest.approx(1 / 3)
    h = F.Head(1000, 64.0, 64.0, 18.0, 0.0)
    x1, y1, x2, y2 = h.crop()
    assert h.radius / (x2 - x1) == pytest.approx(I.HEAD)
    # the box widened as daemon/crop widens it: margin times its width on each side
    bx1, _, bx2, _ = h.box()
    assert (bx2 - bx1) * (1 + 2 * F.MARGIN) == pytest.approx(x2 - x1, abs=1)


def test_scenes_are_deterministic_and_a_prefix_of_longer_sets(heldout):
    images, heads = heldout
    again, heads2 = F.generate_heads(N // 2, "heldout")
    np.testing.assert_array_equal(again, images[: N // 2])
    assert heads2 == heads[: N // 2]
    img, hs, ds = F.scene(3, F.HELDOUT_SEED, I.HELDOUT_IDS)
    np.testing.assert_array_equal(img, images[3])
    assert hs == heads[3]
    assert img.dtype == np.uint8 and img.shape == (F.SIZE, F.SIZE, 3)
    images2, heads3, extra = F.generate_scenes(N // 2, "heldout")
    np.testing.assert_array_equal(images2, images[: N // 2])
    assert heads3 == heads[: N // 2] and extra[3] == ds and extra == F.generate_scenes(N // 2, "heldout")[2]


def test_the_splits_share_no_identity_and_no_scene(heldout):
    images, heads = heldout
    train, train_heads = F.generate_heads(N, "train")
    assert {h.identity for hs in train_heads for h in hs} <= set(I.TRAIN_IDS)
    assert {h.identity for hs in heads for h in hs} <= set(I.HELDOUT_IDS)
    assert not set(I.TRAIN_IDS) & set(I.HELDOUT_IDS)
    assert F.SPLITS["train"][0] != F.SPLITS["heldout"][0]
    assert not {im.tobytes() for im in train} & {im.tobytes() for im in images}


def test_write_dir(tmp_path):
    from PIL import Image

    images, objects = F.generate(3, "heldout")
    _, heads, extra = F.generate_scenes(3, "heldout")
    assert F.objects(heads) == objects
    F.write_dir(str(tmp_path / "bare"), images, objects)
    with open(tmp_path / "bare" / "labels.json") as f:
        assert all(s["distractors"] == [] for s in json.load(f)["scenes"])
    F.write_dir(str(tmp_path), images, objects, extra)
    with open(tmp_path / "labels.json") as f:
        labels = json.load(f)
    assert labels["size"] == F.SIZE and math.isclose(labels["margin"], F.MARGIN)
    assert [s["image"] for s in labels["scenes"]] == ["0000.png", "0001.png", "0002.png"]
    for s, img, objs in zip(labels["scenes"], images, objects):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / s["image"])), img)
        assert s["heads"] == [{"identity": I.name(o["identity"]), "box": list(o["box"])} for o in objs]
    assert [s["distractors"] for s in labels["scenes"]] == [[{"kind": d.kind, "box": list(d.box())} for d in ds]
                                                            for ds in extra]
    assert sum(len(s["distractors"]) for s in labels["scenes"]) > 0
