"""EditSettings: one place that validates every option, with limits on what multiplies time or memory."""

from __future__ import annotations

import pytest

from ficekit.bundle import EditDefaults
from ficekit.settings import MAX_CLIP_AUGMENT, MAX_ITERATIONS, EditSettings, edit_settings, settings_dict


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"iterations": MAX_ITERATIONS + 1}, "--force allows more"),
        ({"clip_augment": MAX_CLIP_AUGMENT + 1}, "clip_augment must be between 0 and 64"),
        ({"seed": 2**64}, "seed must be between 0 and"),
        ({"seed": -1}, "seed must be between 0 and"),
        ({"weights": {"clip": float("inf")}}, r"weights\['clip'\] must be a finite number"),
        ({"weights": {"nonsense": 1.0}}, "unknown term 'nonsense'"),
        ({"inversion": "gan"}, "inversion must be one of"),
        ({"category": "hat"}, "category must be one of"),
        ({"followup_iterations": 0}, "followup_iterations must be between 1"),
        ({"batch_size": 1000}, "batch_size must be between 1 and 64"),
        ({"clip_region": "garment"}, r"clip_region must be one of \['image', 'edit'\]"),
    ],
)
def test_impossible_values_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        edit_settings(EditDefaults(), **bad)


def test_force_lifts_only_the_iteration_cap():
    assert edit_settings(EditDefaults(), force=True, iterations=MAX_ITERATIONS + 1).iterations == MAX_ITERATIONS + 1
    with pytest.raises(ValueError, match="clip_augment"):
        edit_settings(EditDefaults(), force=True, clip_augment=MAX_CLIP_AUGMENT + 1)


def test_inversion_steps_belong_to_their_method():
    pti_bundle = EditDefaults(inversion="pti", inversion_steps=50)
    assert edit_settings(pti_bundle).inversion_steps == 50
    assert edit_settings(pti_bundle, inversion="e4e", inversion_steps=None).inversion_steps is None
    assert edit_settings(pti_bundle, inversion="optimize", inversion_steps=7).inversion_steps == 7
    with pytest.raises(ValueError, match="e4e is one encoder pass"):
        edit_settings(EditDefaults(), inversion_steps=3)


def test_follow_up_rounds_default_to_a_third():
    assert EditSettings(iterations=200).rounds_iterations == 66
    assert EditSettings(iterations=200, followup_iterations=60).rounds_iterations == 60
    assert EditSettings(iterations=2).rounds_iterations == 1


def test_round_trip_through_keywords():
    settings = edit_settings(EditDefaults(iterations=20), lr=0.1, weights={"img": 3.0})
    assert edit_settings(EditDefaults(iterations=20), **settings_dict(settings)) == settings
    assert settings.weights["img"] == 3.0 and settings.weights["clip"] == 1.0  # merged term by term


def test_clip_region_comes_from_the_bundle_and_the_command_line():
    from ficekit import edit as edit_cli

    assert edit_settings(EditDefaults()).clip_region == "image"  # FICE's CLIP term unless a bundle asks
    bundle_defaults = EditDefaults.from_dict({"clip_region": "edit"})
    assert edit_settings(bundle_defaults).clip_region == "edit"
    with pytest.raises(ValueError, match="defaults.clip_region"):
        EditDefaults(clip_region="garment")
    args = edit_cli.build_parser().parse_args(["--text", "red shirt", "--clip-region", "image"])
    assert edit_settings(bundle_defaults, **edit_cli._overrides(args)).clip_region == "image"
    args = edit_cli.build_parser().parse_args(["--text", "red shirt"])
    assert edit_settings(bundle_defaults, **edit_cli._overrides(args)).clip_region == "edit"
