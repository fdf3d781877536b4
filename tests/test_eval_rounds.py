"""The two-round benchmark: its cases and follow-up texts, its summary arithmetic, and an end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ficekit.bundle import load_bundle
from ficekit.eval import rounds, synthetic
from ficekit.eval.judges import PatternJudge
from ficekit.garment_state import apply_instruction
from ficekit.synthetic.world import Garment, contrasting_colours

SIZE = 64


@pytest.fixture(scope="module")
def cases():
    return rounds.make_round_cases(6, SIZE, seed=2)


def test_cases_cycle_the_plans_and_each_round_changes_what_its_plan_says(cases):
    assert [c.plan for c in cases] == list(rounds.PLANS) * 2
    assert [(c.seed, c.texts) for c in cases] == [(c.seed, c.texts) for c in rounds.make_round_cases(6, SIZE, seed=2)]
    for c in cases:
        before = c.photo.attributes.garments()[c.slot]
        for old, new, kind in ((before, c.targets[0], c.plan[0]), (c.targets[0], c.targets[1], c.plan[1])):
            assert (old.colour != new.colour) == (kind == "colour"), (c.texts, old, new)
            assert (old.pattern != new.pattern) == (kind == "pattern"), (c.texts, old, new)
        changed = np.any(c.photo.image != c.ideals[1].image, axis=-1)
        assert not (changed & ~synthetic._grown(c.judged(1).garment_mask()).numpy()).any()


def test_the_session_reads_each_follow_up_as_the_final_target(cases):
    """The texts are in the parser's vocabulary: the state after both rounds names the final colour and pattern."""
    words = {"stripes_h": "horizontal", "stripes_v": "vertical", "dots": "polka dot", "checks": "check"}
    for c in cases:
        state = apply_instruction(None, c.texts[0]).state
        change = apply_instruction(state, c.texts[1])
        assert not change.ignored_words, c.texts
        final = str(change.state)
        assert c.targets[1].colour in final, (c.texts, final)
        if c.targets[1].pattern in words and c.plan[1] == "pattern":
            assert words[c.targets[1].pattern] in final, (c.texts, final)
        if c.targets[1].pattern == "plain":
            assert "plain" in final or "stripe" not in final and "dot" not in final and "check" not in final


def test_follow_up_keeps_the_pattern_colour_valid():
    rng = np.random.default_rng(0)
    striped = Garment(kind="tshirt", colour="red", pattern="stripes_h", secondary="white", sleeve="short")
    for _ in range(20):
        recoloured, text = rounds.follow_up(striped, "colour", rng)
        assert text == f"make it {recoloured.colour}" and recoloured.colour != "red"
        assert recoloured.secondary == "white" and "white" in contrasting_colours(recoloured.colour)
    plain = Garment(kind="tshirt", colour="red", pattern="plain", sleeve="short")
    dotted, text = rounds.follow_up(plain, "pattern", np.random.default_rng(1))
    assert text.startswith("add ") and dotted.secondary in contrasting_colours("red")
    with pytest.raises(ValueError, match="kind"):
        rounds.follow_up(plain, "sleeve", rng)


def _fake_case(session: float, naive: float, composed: float, first_s: float, second_s: float) -> dict:
    def r(success: float, seconds: float) -> dict:
        return {"colour_success": success, "pattern_success": success, "success": success, "seconds": seconds,
                "psnr_outside_mask_db": 50.0, "head_psnr_db": 60.0, "pose_part_iou": 0.9}  # fmt: skip

    return {"strategies": {"session": [r(1.0, first_s), r(session, second_s)],
                           "naive_chain": [r(1.0, first_s), r(naive, 2 * first_s)],
                           "composed": [r(composed, first_s)]}}  # fmt: skip


def test_summary_rates_intervals_time_ratio_and_paired_differences():
    done = [_fake_case(1, 0, 1, 30.0, 10.0), _fake_case(1, 1, 0, 30.0, 10.0)] * 10
    summary = rounds.summarise(done)
    s = summary["strategies"]
    assert s["session"]["success"] == 1.0 and s["session"]["success_ci95"] == [1.0, 1.0]
    assert s["naive_chain"]["success"] == 0.5 and s["naive_chain"]["success_ci95"][0] < 0.5 < s["naive_chain"]["success_ci95"][1]
    assert s["session"]["seconds_per_round"] == [30.0, 10.0] and s["composed"]["seconds_total"] == 30.0
    assert summary["session_followup_over_first_seconds"] == pytest.approx(1 / 3)
    assert summary["success_differences"]["session-naive_chain"]["success"] == 0.5
    low, high = summary["success_differences"]["session-composed"]["ci95"]
    assert 0 < low < 0.5 < high <= 1.0


def test_two_rounds_end_to_end_on_the_demo_bundle(tmp_path, monkeypatch, capsys):
    """`python -m ficekit.eval.synthetic --rounds 2` at 1 step a round: the three strategies ran on the same cases."""
    torch.set_num_threads(1)
    bundle = load_bundle("demo")
    world = bundle.provenance["world"]  # the cases are renders of the bundle's own world, judged by its judge
    judge = PatternJudge.train(SIZE, n_train=100, n_val=20, steps=5, progress=False, world=world)
    path = PatternJudge.cache_path(SIZE, tmp_path / "cache", world)
    path.parent.mkdir(parents=True)
    judge.save(path)
    monkeypatch.setenv("FICEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "rounds.json"
    argv = ["--rounds", "2", "--n", "2", "--iterations", "2", "--followup-iterations", "1", "--bundle", str(bundle.root),
            "--device", "cpu", "--json", str(out), "--quiet"]  # fmt: skip
    assert synthetic.main(argv) == 0
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in rounds.STRATEGIES) and "follow-up / first-round" in table
    report = json.loads(out.read_text())
    assert report["n"] == report["cases_done"] == 2 and report["world"] == world
    assert (report["iterations"], report["followup_iterations"]) == (2, 1)
    assert set(report["strategies"]) == set(rounds.STRATEGIES)
    for row in report["strategies"].values():
        for key in rounds.RATE_KEYS:
            assert 0.0 <= row[key] <= 1.0 and len(row[f"{key}_ci95"]) == 2
    expected = rounds.make_round_cases(2, SIZE, seed=0)
    assert [c["seed"] for c in report["cases"]] == [c.seed for c in expected]
    for case, planned in zip(report["cases"], expected, strict=True):
        s = case["strategies"]
        assert [len(s[name]) for name in rounds.STRATEGIES] == [2, 2, 1]
        assert [r["iterations"] for r in s["session"]] == [2, 1] and s["naive_chain"][1]["iterations"] == 2
        assert s["naive_chain"][0] == s["session"][0]  # the chains share round 1
        assert s["naive_chain"][1]["text"] == planned.texts[1]  # the raw follow-up
        assert s["composed"][0]["text"] == s["session"][1]["text"]  # the session's final composed description
        assert all(r["seconds"] > 0 for name in rounds.STRATEGIES for r in s[name])


def test_bad_options_are_one_line_errors(capsys):
    assert rounds.main(["--n", "0"]) == 2
    assert rounds.main(["--followup-iterations", "0"]) == 2
    assert "error" in capsys.readouterr().err
