"""The domain guard (ficekit.domain): the record in bundle.json, the out-of-domain score on the shipped demo
bundle (renders accepted; real photos, text, noise, renders on textures refused), the skip for bundles without a
record, calibration and its command, and the fice bundle's DensePose one-person rule.

The fice rule can be tested here only mechanically (FICE's weights are not available offline): on a
random-weight bundle of FICE's file formats and on hand-made person masks, not on VITON photos.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ficekit.bundle import BundleError, demo_bundle_dir, load_bundle, write_bundle, write_domain
from ficekit.domain import (
    DEMO_WAY_ON,
    SCORE_CALIBRATED,
    SCORE_PERSON,
    DomainRecord,
    DomainScore,
    OutOfDomainError,
    calibrate,
    check_photos,
    demo_description,
    fice_domain_record,
    person_rule_record,
    region_sizes,
    render_photos,
    score_photos,
)
from ficekit.pipeline import FicePipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo() -> FicePipeline:
    torch.set_num_threads(1)
    return FicePipeline.from_bundle("demo", device="cpu")


def _copy_of_demo(folder: Path, domain: object = "keep") -> Path:
    """A bundle.json in `folder` naming the shipped demo model files by absolute path (no copies of the weights)."""
    source = demo_bundle_dir()
    data = json.loads((source / "bundle.json").read_text())
    for spec in data["models"].values():
        spec["file"] = str(source / spec["file"])
    data["example_images"] = [str(source / p) for p in data["example_images"]]
    if domain != "keep":
        data.pop("domain", None)
        if domain is not None:
            data["domain"] = domain
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(json.dumps(data))
    return folder


def _record(**changes: object) -> dict:
    data = {
        "description": "test people", "score": SCORE_CALIBRATED, "low": 0.0, "high": 4.0, "n": 100,
        "stats": {"parts": {"recon": {"center": -5.0, "scale": 0.5, "side": "high"}}}, "way_on": "use another bundle",
        "command": "python -m ficekit.domain_calibrate --renders 100",
    }  # fmt: skip
    data.update(changes)
    return data


# ---------------------------------------------------------------------------------------------------
# The record in bundle.json.


def test_record_round_trips_through_bundle_json(tmp_path: Path) -> None:
    folder = _copy_of_demo(tmp_path / "b", domain=None)
    assert load_bundle(folder).domain is None
    record = DomainRecord.from_dict(_record())
    bundle = write_domain(folder, record)
    assert bundle.domain == record
    assert json.loads((folder / "bundle.json").read_text())["domain"] == record.to_dict()
    assert load_bundle(folder).to_dict()["domain"] == record.to_dict()
    # write_bundle takes the record too, and the other keys of bundle.json stay as they were.
    again = write_bundle(tmp_path / "c", bundle.models, bundle.defaults, bundle.provenance, domain=record)
    assert again.domain == record
    assert write_domain(folder, None).domain is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"low": 5.0}, "domain.low"),
        ({"high": "wide"}, "domain.high"),
        ({"high": float("nan")}, "domain.high"),
        ({"score": "magic/9"}, "domain.score"),
        ({"description": ""}, "domain.description"),
        ({"n": -1}, "domain.n"),
        ({"way_on": "two\nlines"}, "domain.way_on"),
        ({"colour": "red"}, "domain: unknown key(s) ['colour']"),
        (
            {"stats": {"parts": {"recon": {"center": -5.0, "scale": 0.0, "side": "high"}}}},
            "domain.stats.parts.recon.scale",
        ),
        (
            {"stats": {"parts": {"recon": {"center": -5.0, "scale": 1.0, "side": "low"}}}},
            "domain.stats.parts.recon.side",
        ),
        ({"stats": {"parts": {"smell": {"center": 0.0, "scale": 1.0, "side": "high"}}}}, "domain.stats.parts.smell"),
        ({"stats": {}}, "domain.stats.parts"),
    ],
)
def test_bad_records_are_refused_naming_the_field(tmp_path: Path, changes: dict, field: str) -> None:
    folder = _copy_of_demo(tmp_path / "b", domain=_record(**changes))
    with pytest.raises(BundleError, match=r"bundle\.json: .*" + re.escape(field)):
        load_bundle(folder)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    data = _record()
    del data["low"]
    with pytest.raises(BundleError, match=r"domain\.low is missing"):
        load_bundle(_copy_of_demo(tmp_path / "b", domain=data))
    with pytest.raises(BundleError, match=r"domain must be an object"):
        load_bundle(_copy_of_demo(tmp_path / "c", domain=[1, 2]))


# ---------------------------------------------------------------------------------------------------
# The score, by hand.


def test_zmax_score_by_hand(demo: FicePipeline) -> None:
    """One recon part, centre c and scale s: the score is max((log MSE - c) / s, 0); a two-sided part |z|."""
    x = render_photos(2, seed=0, resolution=demo.resolution, world=demo.bundle.provenance.get("world"))
    mse = ((demo.reconstruct(x) - x) ** 2).mean(dim=(1, 2, 3)).double()
    centre, scale = float(mse[0].log()), 0.25
    high = DomainRecord(
        "t", SCORE_CALIBRATED, 0.0, 1.0, 10, {"parts": {"recon": {"center": centre, "scale": scale, "side": "high"}}}
    )
    both = DomainRecord(
        "t", SCORE_CALIBRATED, 0.0, 1.0, 10, {"parts": {"recon": {"center": centre, "scale": scale, "side": "both"}}}
    )
    expected = (float(mse[1].log()) - centre) / scale
    got_high, got_both = score_photos(demo, x, high), score_photos(demo, x, both)
    assert got_high[0].value == pytest.approx(0.0, abs=1e-3) and got_high[0].accepted
    assert got_high[1].value == pytest.approx(max(expected, 0.0), abs=1e-3)
    assert got_both[1].value == pytest.approx(abs(expected), abs=1e-3)
    assert got_both[1].accepted == (abs(expected) <= 1.0)


def test_region_sizes_by_hand() -> None:
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[0, 1:5, 1:5] = True  # 16 px
    mask[0, 7:9, 6:9] = True  # 6 px, apart
    mask[0, 5, 5] = True  # touches the first block diagonally: 8-connected, 17 px
    assert region_sizes(mask) == [[0.17, 0.06], []]


def test_person_rule_mechanics() -> None:
    record = person_rule_record("people", low=0.1, high=0.9, way_on="crop it")
    from ficekit.domain import _person_rule

    assert _person_rule(record, 0.4, 1).accepted
    assert _person_rule(record, 0.4, 2).reason == "DensePose finds 2 people"
    assert _person_rule(record, 0.0, 0).reason == "DensePose finds no person"
    assert not _person_rule(record, 0.95, 1).accepted


# ---------------------------------------------------------------------------------------------------
# The shipped demo bundle.


def _shipped_record() -> DomainRecord:
    record = load_bundle("demo").domain
    assert record is not None, "the shipped demo bundle has no domain record"
    return record


def test_demo_accepts_held_out_renders(demo: FicePipeline) -> None:
    # The synthetic benchmark's held-out block, in the demo's world.
    x = render_photos(8, seed=0, resolution=demo.resolution, world=demo.bundle.provenance.get("world"))
    scores = check_photos(demo, x, _shipped_record(), [f"render{i}" for i in range(8)])
    assert len(scores) == 8 and all(isinstance(s, DomainScore) and s.accepted for s in scores)
    assert score_photos(demo, x) == scores  # the pipe's bundle's record by default


def test_demo_refuses_skimage_portraits_with_one_line(demo: FicePipeline) -> None:
    pytest.importorskip("skimage")
    from ficekit.domain_calibrate import SKIMAGE_PHOTOS, real_photos

    photos = real_photos(demo.resolution)
    names = list(SKIMAGE_PHOTOS)
    chosen = [names.index(n) for n in ("astronaut.png", "coffee.png", "chelsea.png")]
    record = _shipped_record()
    scores = score_photos(demo, photos[chosen], record)
    assert not any(s.accepted for s in scores)
    with pytest.raises(OutOfDomainError) as caught:
        check_photos(demo, photos[chosen], record, ["astronaut.png", "coffee.png", "chelsea.png"])
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, ValueError)
    assert message.startswith("astronaut.png (and 2 more photo(s)): outside the domain of bundle 'demo' (")
    assert f"[{record.low:.3g}, {record.high:.3g}]" in message and DEMO_WAY_ON in message
    assert caught.value.names == ["astronaut.png", "coffee.png", "chelsea.png"]


@pytest.mark.parametrize("family", ["noise", "photos of text", "renders on textures"])
def test_demo_refuses_hard_negatives(demo: FicePipeline, family: str) -> None:
    rng = np.random.default_rng(1)
    from ficekit import domain_calibrate as negatives

    if family == "noise":
        x = negatives.noise(demo.resolution, 4, rng)
    elif family == "photos of text":
        x = negatives.text_photos(demo.resolution, 2, rng)
    else:
        pytest.importorskip("skimage")
        world = demo.bundle.provenance.get("world")
        x = negatives.pasted_on_texture(demo.resolution, [1_000_000_001, 1_000_000_002], rng, world)
    assert not any(s.accepted for s in score_photos(demo, x, _shipped_record()))


def test_bundle_without_record_skips_with_one_info_line(demo: FicePipeline, caplog) -> None:
    x = torch.rand(1, 3, demo.resolution, demo.resolution)
    with caplog.at_level(logging.INFO, logger="ficekit.domain"):
        assert check_photos(demo, x, None, ["noise.png"]) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "ficekit.domain"]
    assert lines == ["bundle 'demo' has no domain record; skipping the domain check"]


def test_score_input_is_checked(demo: FicePipeline) -> None:
    with pytest.raises(ValueError, match="x"):
        score_photos(demo, torch.rand(1, 3, 32, 32), _shipped_record())
    with pytest.raises(ValueError, match="one name per photo"):
        check_photos(demo, torch.rand(2, 3, demo.resolution, demo.resolution), _shipped_record(), ["a"])


# ---------------------------------------------------------------------------------------------------
# Calibration.


def test_calibrate_and_cli_write(demo: FicePipeline, tmp_path: Path) -> None:
    x = render_photos(24, seed=5, resolution=demo.resolution, world=demo.bundle.provenance.get("world"))
    record = calibrate(demo, x, "synthetic people", way_on="use fice")
    assert record.score == SCORE_CALIBRATED and record.n == 24 and record.low == 0.0
    assert set(record.stats["parts"]) == {"recon", "parse_entropy", "background_share", "pose_doubt", "person_share"}
    # At most 1 of 24 calibration photos lies above the 99.5 % quantile, and the margin lets it in too.
    assert sum(s.accepted for s in score_photos(demo, x, record)) >= 23
    with pytest.raises(ValueError, match="at least 20"):
        calibrate(demo, x[:5], "too few")

    from ficekit.domain_calibrate import main

    folder = _copy_of_demo(tmp_path / "b", domain=None)
    assert main(["--bundle", str(folder), "--renders", "24", "--seed", "5", "--write"]) == 0
    written = load_bundle(folder).domain
    assert written is not None and written.high == pytest.approx(record.high)
    assert written.command.endswith(f"--bundle {folder} --renders 24 --seed 5 --write")
    assert written.way_on == DEMO_WAY_ON


def test_demo_trainer_writes_the_record(tmp_path: Path) -> None:
    from ficekit.synthetic.train import DOMAIN_SEED, _write_domain_record

    folder = _copy_of_demo(tmp_path / "b", domain=None)
    bundle = _write_domain_record(load_bundle(folder), "v1", "cpu", 24)
    assert load_bundle(folder).domain == bundle.domain
    assert bundle.domain.n == 24 and bundle.domain.way_on == DEMO_WAY_ON
    assert f"--renders 24 --seed {DOMAIN_SEED} --write" in bundle.domain.command


def test_cli_needs_a_description_for_a_folder(tmp_path: Path, capsys) -> None:
    from ficekit.domain_calibrate import main
    from ficekit.imageio import write_png

    folder = _copy_of_demo(tmp_path / "b", domain=None)
    (tmp_path / "photos").mkdir()
    write_png(torch.rand(3, 16, 16), tmp_path / "photos" / "a.png")
    assert main(["--bundle", str(folder), "--images", str(tmp_path / "photos")]) == 2
    assert "--description is needed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The fice bundle's rule (mechanically only: random weights).


def test_fice_rule_on_a_random_weight_bundle(tmp_path: Path) -> None:
    """FICE's record on a random-weight bundle of FICE's formats: scores come from DensePose's person mask as
    defined; whether the rule separates VITON photos cannot be tested offline."""
    from ficekit.download import FICE_RELEASE
    from ficekit.random_bundle import write_random_bundle

    assert FICE_RELEASE.domain == fice_domain_record() and FICE_RELEASE.domain.score == SCORE_PERSON
    bundle = write_random_bundle(tmp_path / "tiny", "tiny")
    bundle = write_domain(bundle.root, fice_domain_record())
    assert bundle.domain == fice_domain_record()
    pipe = FicePipeline(bundle, device="cpu")
    x = torch.rand(3, 3, pipe.resolution, pipe.resolution)
    scores = score_photos(pipe, x)
    person = torch.softmax(pipe.densepose(x).coarse_segm, dim=1)[:, 1:].sum(dim=1) > 0.5
    for score, regions in zip(scores, region_sizes(person), strict=True):
        assert score.value == pytest.approx(max(regions, default=0.0))
        assert score.parts["people"] == sum(r >= 0.02 for r in regions)
        assert score.accepted == (0.1 <= score.value <= 0.9 and score.parts["people"] == 1)
    # A range that leaves out the first photo's share refuses it, with the record's way on.
    value = scores[0].value
    low, high = (value + 0.01, 1.0) if value < 0.5 else (0.0, value - 0.01)
    narrow = dataclasses.replace(bundle.domain, low=low, high=high)
    with pytest.raises(
        OutOfDomainError, match=r"^a: outside the domain of bundle 'random-tiny' .*fice bundle knows VITON-style photos"
    ):
        check_photos(pipe, x[:1], narrow, ["a"])


def test_demo_description_names_each_worlds_framing() -> None:
    assert "full-length" in demo_description("v1") and demo_description(None) == demo_description("v1")
    assert "upper body" in demo_description("v2") and "full-length" not in demo_description("v2")
    with pytest.raises(ValueError, match="world"):
        demo_description("v9")
