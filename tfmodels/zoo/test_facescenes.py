"""Fast tests of facescenes.py: each box is the drawn head disc's and the face drawn there is
its identity's, heads keep their crops to themselves and inside the scene, the crop with the
margin puts the head at identities.py's scale, scenes are deterministic, and the splits share
neither identities nor scenes.

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
    img, hs = F.scene(3, F.HELDOUT_SEED, I.HELDOUT_IDS)
    np.testing.assert_array_equal(img, images[3])
    assert hs == heads[3]
    assert img.dtype == np.uint8 and img.shape == (F.SIZE, F.SIZE, 3)


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
    F.write_dir(str(tmp_path), images, objects)
    with open(tmp_path / "labels.json") as f:
        labels = json.load(f)
    assert labels["size"] == F.SIZE and math.isclose(labels["margin"], F.MARGIN)
    assert [s["image"] for s in labels["scenes"]] == ["0000.png", "0001.png", "0002.png"]
    for s, img, objs in zip(labels["scenes"], images, objects):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / s["image"])), img)
        assert s["heads"] == [{"identity": I.name(o["identity"]), "box": list(o["box"])} for o in objs]
