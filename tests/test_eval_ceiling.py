"""The generator's ceiling row of the synthetic benchmark: the ideal projected into W+ and pasted over the edit."""

from __future__ import annotations

import pytest
import torch

from ficekit.eval import synthetic
from ficekit.eval.ceiling import CEILING_ROW, paste_over_edit_region, projected_ideal
from ficekit.eval.judges import PatternJudge
from ficekit.generator.synthesis import synthesize_01
from ficekit.random_bundle import write_random_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    bundle = write_random_bundle(tmp_path_factory.mktemp("ceiling") / "tiny", "tiny", seed=0)
    return bundle, bundle.load("generator", "cpu"), bundle.load("encoder", "cpu")


def test_paste_takes_the_drawing_on_the_region_grown_by_one_pixel_and_the_photo_elsewhere():
    photo, drawing = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[4, 4] = True
    pasted = paste_over_edit_region(photo, drawing, region)
    expected = torch.zeros(3, 8, 8)
    expected[:, 3:6, 3:6] = 1  # the 3 x 3 square around the one region pixel
    assert torch.equal(pasted, expected)


def test_paste_refuses_tensors_of_different_sizes():
    with pytest.raises(ValueError, match="share their size"):
        paste_over_edit_region(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(4, 4, dtype=torch.bool))


def test_projected_ideal_is_the_projection_inside_the_region_and_the_photo_outside(tiny):
    from ficekit.inversion.invert import invert

    _, G, encoder = tiny
    size = int(G.img_resolution)
    ideal, photo = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0)), torch.rand(3, size, size)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[size // 4 : size // 2, size // 4 : size // 2] = True
    result = projected_ideal(ideal, photo, region, G, encoder, steps=3, seed=5)

    inversion = invert(ideal[None], G, encoder, method="optimize", steps=3, seed=5, progress=False)
    with torch.no_grad():
        drawing = synthesize_01(inversion.generator, inversion.ws)[0].clamp(0, 1)
    assert torch.equal(result, paste_over_edit_region(photo, drawing, region))
    outside = ~paste_over_edit_region(torch.zeros(1, size, size), torch.ones(1, size, size), region).bool()[0]
    assert torch.equal(result[:, outside], photo[:, outside])
    # the projection moved away from the e4e start: without its steps the drawing would be G(e4e(ideal))
    with torch.no_grad():
        start = synthesize_01(G, encoder(ideal[None]))[0].clamp(0, 1)
    assert not torch.equal(drawing, start)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True])
def test_projected_ideal_refuses_bad_step_counts(tiny, steps):
    _, G, encoder = tiny
    image = torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match="ceiling steps"):
        projected_ideal(image, image, torch.zeros(4, 4, dtype=torch.bool), G, encoder, steps=steps)


def test_benchmark_adds_the_ceiling_row_only_when_asked(tiny, monkeypatch):
    bundle, G, _ = tiny
    size = int(G.img_resolution)
    judge = PatternJudge.train(size, n_train=100, n_val=20, steps=5, progress=False)
    monkeypatch.setattr(synthetic, "pattern_judge", lambda *args, **kwargs: judge)
    common = dict(n=1, iterations=1, configs=["auto+feather"], device="cpu", progress=False)
    plain = synthetic.run_benchmark(str(bundle.root), **common)
    assert CEILING_ROW not in plain["configs"] and plain["ceiling_steps"] == 0
    report = synthetic.run_benchmark(str(bundle.root), ceiling_steps=2, **common)
    assert list(report["configs"]) == ["ideal", CEILING_ROW, "auto+feather"]
    assert report["configs"][CEILING_ROW]["settings"] == {"projection": "optimize", "steps": 2}
    scores = report["cases"][0]["scores"][CEILING_ROW]
    assert scores["seconds_per_edit"] > 0 and 0 <= scores["colour_success"] <= 1
    assert scores["psnr_outside_mask_db"] == synthetic.PSNR_CAP_DB  # the photo is kept bit for bit outside the edit


def test_cli_ceiling_flag_defaults_its_steps_and_refuses_negative_ones(monkeypatch, capsys):
    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(synthetic, "run_benchmark", fake_run)
    assert synthetic.main(["--ceiling"]) == 2 and seen["ceiling_steps"] == synthetic.DEFAULT_CEILING_STEPS
    assert synthetic.main(["--ceiling", "40"]) == 2 and seen["ceiling_steps"] == 40
    assert synthetic.main([]) == 2 and seen["ceiling_steps"] == 0
    assert synthetic.main(["--ceiling", "-1"]) == 2
    assert "--ceiling >= 0" in capsys.readouterr().err
