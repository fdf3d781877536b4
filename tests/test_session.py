"""EditSession: rounds that remember the garment, warm-start from the previous W+, keep the original photo's
targets, rebuild masks only when the garment's shape changes, and undo/redo/reset — on the demo bundle."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ficekit import EditSession, FicePipeline, InstructionNotUnderstood


@pytest.fixture(scope="module")
def pipe() -> FicePipeline:
    torch.set_num_threads(1)
    return FicePipeline.from_bundle("demo", device="cpu")


@pytest.fixture
def session(pipe) -> EditSession:
    return pipe.session(pipe.bundle.example_images[0], iterations=3, followup_iterations=2)


def test_follow_ups_change_the_state_and_the_clip_target(session):
    first = session.apply("red t-shirt")
    second = session.apply("add white stripes")
    assert str(session.state) == "red t-shirt with white stripes" == second.text
    assert session.state.colors == ("red",) and session.state.pattern == "striped"
    assert second.result.instruction.text == "red t-shirt with white stripes"  # composed, not the raw follow-up
    assert first.text == "red t-shirt" and [r.instruction for r in session.history] == ["red t-shirt",
                                                                                         "add white stripes"]


def test_follow_up_warm_starts_from_the_previous_round_and_runs_fewer_steps(pipe, monkeypatch):
    session = pipe.session(pipe.bundle.example_images[0], iterations=3, followup_iterations=2, start="inversion")
    inversions = []
    real_invert = pipe.invert
    monkeypatch.setattr(pipe, "invert", lambda *a, **k: inversions.append(1) or real_invert(*a, **k))
    first = session.apply("red t-shirt")
    starts = []
    second = session.apply("make it blue", callback=lambda step, ws, g, losses: starts.append(ws.clone()),
                           callback_every=100)
    assert torch.equal(starts[0], first.ws)  # step 0 renders the previous round's W+
    assert second.warm_start and not first.warm_start
    assert len(first.result.history["total"]) == 3 + 1 and len(second.result.history["total"]) == 2 + 1
    assert len(inversions) == 1  # inverted once per session, never the stitched composite


def test_with_the_collage_start_a_follow_up_moves_by_the_encoders_step_between_composites(session, pipe):
    from ficekit.collage import collage_composite

    def composite(targets):
        return collage_composite(session.x, targets.keep_mask, targets.collage, targets.bare_mask, targets.skin_rgb)

    first = session.apply("red t-shirt")
    second = session.apply("add white polka dots")
    with torch.no_grad():
        expected = first.ws.to(session.x.device) + pipe.encoder(composite(second.targets)) \
            - pipe.encoder(composite(first.targets))
    assert second.warm_start and torch.allclose(second.result.ws_init, expected.cpu(), atol=1e-5)
    assert (second.result.ws_init - first.ws).abs().max() > 0.05  # not simply the previous round's W+
    session.undo()
    third = session.apply("checks instead")  # from the round now current (the first), not the undone one
    with torch.no_grad():
        expected = first.ws.to(session.x.device) + pipe.encoder(composite(third.targets)) \
            - pipe.encoder(composite(first.targets))
    assert torch.allclose(third.result.ws_init, expected.cpu(), atol=1e-5)


def test_preservation_targets_stay_the_original_photo(session, pipe, monkeypatch):
    seen = []
    real = pipe.optimize

    def spy(x, masks, text, ws_init, settings, **kw):
        outcome, targets = real(x, masks, text, ws_init, settings, **kw)
        seen.append(targets)
        return outcome, targets

    monkeypatch.setattr(pipe, "optimize", spy)
    for text in ("red t-shirt", "add white stripes", "make it green"):
        session.apply(text)
    for targets in seen:
        assert torch.equal(targets.photo, session.x)  # never a previous round's result
    assert not torch.equal(seen[0].text_features, seen[2].text_features)


def test_masks_are_rebuilt_only_when_the_garment_shape_changes(session):
    rebuilt = [session.apply(t).masks_rebuilt for t in ("red t-shirt", "add white stripes", "long sleeves", "wool")]
    assert rebuilt == [True, False, True, False]
    history = session.history
    assert torch.equal(history[0].result.masks.blend, history[1].result.masks.blend)
    assert not torch.equal(history[1].result.masks.blend, history[2].result.masks.blend)


def test_undo_redo_reset_and_new_rounds_drop_the_redo_line(session):
    first = session.apply("red t-shirt")
    second = session.apply("add white stripes")
    assert session.undo() is first and str(session.state) == "red t-shirt"
    assert torch.equal(session.result, first.result.images[0])
    assert session.apply("redo") is second
    assert session.apply("undo") is first
    third = session.apply("polka dots instead")
    assert session.history == [first, third] and not session.can_redo
    with pytest.raises(ValueError, match="nothing to redo"):
        session.redo()
    assert session.apply("reset") is None and session.history == [] and session.state is None
    assert torch.equal(session.result, session.photo)
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()


def test_a_round_after_reset_starts_like_a_first_round(session, pipe):
    first = session.apply("red t-shirt")
    session.apply("add white stripes")
    session.reset()
    again = session.apply("red t-shirt")
    assert not again.warm_start and pipe.settings().start == "collage"  # the demo starts at the collage
    assert torch.equal(again.result.ws_init, first.result.ws_init) and torch.equal(again.ws, first.ws)
    with torch.no_grad():
        assert not torch.equal(first.result.ws_init, pipe.encoder(session.x).cpu())  # not the photo's inversion


def test_unreadable_instructions_are_refused_with_their_words(session):
    with pytest.raises(InstructionNotUnderstood, match="blorp"):
        session.apply("blorp zzyzx")
    assert session.history == []


def test_one_photo_per_session(pipe):
    with pytest.raises(ValueError, match="one photo"):
        pipe.session(pipe.bundle.example_images)


def test_preview_and_save(session, tmp_path):
    previews = []
    session.apply("red t-shirt", callback=lambda step, ws, g, losses: previews.append(session.preview(g)),
                  callback_every=1)
    session.apply("add white stripes")
    assert len(previews) == 4 and isinstance(previews[0], Image.Image)
    assert previews[0].size == (session.photo.shape[2], session.photo.shape[1])
    groups = session.save(tmp_path)
    assert [sorted(g.files) for g in groups] == [["grid", "mask_blend", "mask_edit", "mask_keep", "result"]] * 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["text"] for r in report["rounds"]] == ["red t-shirt", "red t-shirt with white stripes"]
    assert report["rounds"][1]["warm_start"] and not report["rounds"][1]["masks_rebuilt"]
