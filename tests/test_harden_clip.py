"""CLIP hardening against the generator's edits: the preference loss's known values, the edit cases it samples,
that the short edit is what the current CLIP prefers, and the CLI's bundle (written, loadable, source untouched)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ficekit.bundle import load_bundle, sha256_file
from ficekit.generator import synthesize_01
from ficekit.random_bundle import write_random_bundle
from ficekit.synthetic.dataset import HELD_OUT_SEED_START
from ficekit.synthetic.harden_clip import (
    fooling_images,
    harden_clip,
    main,
    preference_loss,
    sample_edit_cases,
)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:CLIP text needs")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return write_random_bundle(tmp_path_factory.mktemp("tiny") / "bundle", "tiny", seed=0)


def test_preference_loss_known_values() -> None:
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    same = preference_loss(text, text, text, 10.0)
    assert math.isclose(float(same), math.log(2), rel_tol=1e-6)  # alike: log 2
    ideal = text
    edit = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # cosine 0 with its caption, the ideal has 1
    expected = math.log(1 + math.exp(-2.0))  # CE of logits (2, 0) on class 0
    assert math.isclose(float(preference_loss(ideal, edit, text, 2.0)), expected, rel_tol=1e-5)
    assert float(preference_loss(edit, ideal, text, 10.0)) > 10  # the edit preferred: large
    with pytest.raises(ValueError, match="shapes differ"):
        preference_loss(text, text[:1], text, 1.0)


def test_edit_cases_come_from_training_seeds_and_change_only_the_edit_region(monkeypatch: pytest.MonkeyPatch) -> None:
    import ficekit.synthetic.harden_clip as H

    seen: list[int] = []
    real_render = H.render

    def spy(seed: int, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(seed)
        return real_render(seed, *args, **kwargs)

    monkeypatch.setattr(H, "render", spy)
    cases = sample_edit_cases(3, 32, np.random.default_rng(0), world="v2")
    assert cases.photos.shape == cases.ideals.shape == (3, 3, 32, 32) and cases.keep.shape == (3, 1, 32, 32)
    assert len(cases.captions) == 3 and all(isinstance(c, str) and c for c in cases.captions)
    assert seen and all(0 <= s < HELD_OUT_SEED_START for s in seen)
    keep = cases.keep.bool().expand_as(cases.photos)
    assert torch.equal(cases.photos[keep], cases.ideals[keep])  # outside the edit region: the same picture
    assert not torch.equal(cases.photos, cases.ideals)  # inside: the target differs
    assert set(cases.keep.unique().tolist()) <= {0.0, 1.0} and 0 < float(cases.keep.mean()) < 1
    with pytest.raises(ValueError, match="n must be"):
        sample_edit_cases(0, 32, np.random.default_rng(0))


def test_short_edit_raises_clip_score_and_keeps_the_photo_outside(tiny) -> None:
    G, E, guide = tiny.load("generator"), tiny.load("encoder"), tiny.load("clip")
    size = int(G.img_resolution)
    cases = sample_edit_cases(2, size, np.random.default_rng(1), world="v2")
    with torch.no_grad():
        start = E(cases.photos)
    before = [p.detach().clone() for p in guide.model.parameters()]

    def score(images: torch.Tensor) -> torch.Tensor:
        text = guide.encode_text(cases.captions)
        return (guide.encode_image(images) * text).sum(-1)

    edits = fooling_images(G, start, guide, cases, steps=15, lr=0.1)
    assert edits.shape == cases.photos.shape and not edits.requires_grad
    keep = cases.keep.bool().expand_as(edits)
    assert torch.equal(edits[keep], cases.photos[keep])
    with torch.no_grad():
        initial = cases.keep * cases.photos + (1 - cases.keep) * synthesize_01(G, start)
    assert float(score(edits).mean()) > float(score(initial).mean())  # the edit chased the caption
    assert all(torch.equal(a, b) for a, b in zip(before, guide.model.parameters(), strict=True))  # CLIP untouched
    with pytest.raises(ValueError, match="steps must be"):
        fooling_images(G, start, guide, cases, steps=0)


def test_hardening_writes_a_loadable_bundle_and_leaves_the_source(tiny, tmp_path: Path) -> None:
    source_json = (tiny.root / "bundle.json").read_text()
    source_sha = sha256_file(tiny.path("clip"))
    out = tmp_path / "hardened"
    code = main(["--bundle", str(tiny.root), "--out", str(out), "--steps", "2", "--edit-steps", "2",
                 "--batch-size", "2", "--quiet"])  # fmt: skip
    assert code == 0
    assert (tiny.root / "bundle.json").read_text() == source_json and sha256_file(tiny.path("clip")) == source_sha
    hardened = load_bundle(out)
    hardened.verify("clip")
    assert sha256_file(hardened.path("clip")) != source_sha
    record = json.loads((out / "bundle.json").read_text())["provenance"]["training"]["clip_hardening"]
    assert record["steps"] == 2 and record["config"]["edit_steps"] == 2
    assert {"preference_start", "preference_end", "colour_accuracy"} <= set(record["metrics"])
    for role in ("generator", "encoder"):
        assert sha256_file(hardened.path(role)) == sha256_file(tiny.path(role))
    hardened.load("clip")  # the loader builds it
    assert main(["--bundle", str(tiny.root), "--out", str(out), "--steps", "1", "--quiet"]) == 2  # not empty


def test_bad_arguments_are_refused(tiny, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="edit_steps"):
        harden_clip(tiny, tmp_path, steps=1, edit_steps=0)
    with pytest.raises(ValueError, match="render_batch_size"):
        harden_clip(tiny, tmp_path, steps=1, render_batch_size=1)
    with pytest.raises(ValueError, match="steps must be"):
        harden_clip(tiny, tmp_path, steps=0)
    assert main(["--bundle", str(tiny.root), "--out", str(tmp_path / "x"), "--minutes", "0"]) == 2
    assert not (tmp_path / "x").exists()


def test_the_bundles_world_is_used_unless_one_is_given(tiny, tmp_path: Path) -> None:
    import dataclasses

    from ficekit.synthetic.harden_clip import bundle_world
    from ficekit.synthetic.world import DEFAULT_WORLD

    v2 = dataclasses.replace(tiny, provenance={**tiny.provenance, "world": "v2"})
    assert bundle_world(v2) == "v2" and bundle_world(tiny) == tiny.provenance.get("world", DEFAULT_WORLD)
    fast = {"steps": 1, "batch_size": 1, "render_batch_size": 2, "edit_steps": 1, "progress": False, "eval_samples": 4}
    assert harden_clip(v2, tmp_path / "a", **fast).config["world"] == "v2"  # a v2 bundle's CLIP hardens on v2
    assert harden_clip(v2, tmp_path / "b", world="v1", **fast).config["world"] == "v1"
