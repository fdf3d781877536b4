"""python -m ficekit.synthetic.train: every stage at toy size writes a bundle the editor can use."""

import json

import pytest
import torch

from ficekit.bundle import load_bundle
from ficekit.pipeline import FicePipeline
from ficekit.synthetic.train import RECORDS_FILE, STAGES, main, train_bundle

G_KW = {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 1},
        "synthesis_kwargs": {"channel_base": 128, "channel_max": 16}}  # fmt: skip
TOY = {
    "gan": {"steps": 2, "resolution": 32, "batch_size": 2, "pool_size": 8, "n_eval": 8, "g_kwargs": G_KW,
            "d_kwargs": {"channel_base": 128, "channel_max": 16}},
    "e4e": {"steps": 2, "batch_size": 2, "eval_samples": 2, "bn_calibration": 4,
            "encoder_kwargs": {"units": [1, 1, 1, 1], "channels": [16, 16, 16, 16]}},
    "clip": {"steps": 2, "batch_size": 2, "image_size": 32, "eval_samples": 4, "model_config": {
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}},
    "densepose": {"steps": 2, "batch_size": 2, "image_size": 32, "eval_images": 2, "config": {
        "depth": 18, "stem_out_channels": 8, "res2_out_channels": 8, "fpn_channels": 8, "decoder_conv_dims": 8,
        "decoder_num_classes": 8, "head_num_convs": 1, "head_conv_dim": 8, "pooler_resolution": 8}},
    "parser": {"steps": 2, "batch_size": 2, "image_size": 32, "eval_images": 2,
               "architecture": {"type": "small_unet", "base_channels": 4, "depth": 2}},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_all_stages_write_a_bundle_the_editor_runs(tmp_path):
    bundle = train_bundle(tmp_path / "demo", STAGES, minutes=5, progress=False, stage_kwargs=TOY)
    assert set(bundle.models) == {"generator", "encoder", "clip", "densepose", "parser", "segmenter"}
    assert bundle.name == "demo" and len(bundle.example_images) == 2
    training = bundle.provenance["training"]
    assert all(training[role]["steps"] >= 1 and "metrics" in training[role] for role in bundle.models)
    assert all(spec.sha256 for spec in bundle.models.values())
    reloaded = load_bundle(tmp_path / "demo")
    pipe = FicePipeline.from_bundle(reloaded, device="cpu")
    result = pipe.edit([torch.rand(3, 40, 40)],
                       "striped cotton shirt", iterations=1, progress=False, mask="fice")
    assert result.images[0].shape == (3, 40, 40)


def test_retraining_one_stage_keeps_the_others(tmp_path):
    out = tmp_path / "demo"
    train_bundle(out, STAGES, minutes=5, progress=False, stage_kwargs=TOY)
    before = load_bundle(out)
    after = train_bundle(out, ["clip"], minutes=1, progress=False, stage_kwargs={**TOY, "clip": {**TOY["clip"], "seed": 3}})
    assert after.models["generator"] == before.models["generator"]
    assert after.models["clip"].sha256 != before.models["clip"].sha256


def test_bad_requests_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown stage"):
        train_bundle(tmp_path, ["gann"], minutes=1)
    with pytest.raises(ValueError, match="needs a generator"):
        train_bundle(tmp_path / "empty", ["e4e"], minutes=1)
    assert main(["--out", str(tmp_path / "x"), "--only", "nope"]) == 2
    assert "unknown stage" in capsys.readouterr().err


def test_a_run_that_finishes_later_keeps_what_another_run_wrote_meanwhile(tmp_path, monkeypatch):
    """Two trainings into one folder (e.g. the GAN in one process, CLIP in another): both roles survive."""
    from ficekit.synthetic import train as train_module

    out = tmp_path / "demo"
    original = train_module._run_stages

    def run_then_let_another_run_finish(*args, **kwargs):
        trained = original(*args, **kwargs)
        original_run = train_module._run_stages
        monkeypatch.setattr(train_module, "_run_stages", original)
        # The other run ends first; without a generator record of ours yet it cannot write a bundle.
        assert train_bundle(out, ["clip"], minutes=1, progress=False, stage_kwargs=TOY) is None
        assert (out / RECORDS_FILE).exists() and not (out / "bundle.json").exists()
        monkeypatch.setattr(train_module, "_run_stages", original_run)
        return trained

    monkeypatch.setattr(train_module, "_run_stages", run_then_let_another_run_finish)
    bundle = train_bundle(out, ["gan", "e4e"], minutes=1, progress=False, stage_kwargs=TOY)
    assert {"generator", "encoder", "clip"} <= set(bundle.models)
    assert not (out / RECORDS_FILE).exists()  # folded into bundle.json
    assert set(bundle.provenance["training"]) >= {"generator", "encoder", "clip"}
    # The GAN co-trained the encoder (demo default) and the e4e stage started from it.
    assert bundle.provenance["training"]["encoder"]["config"]["init_from"].endswith("e4e.pt")


def test_provenance_names_the_bundle_files_relative_to_the_bundle(tmp_path):
    bundle = train_bundle(tmp_path / "demo", STAGES, minutes=5, progress=False, stage_kwargs=TOY)
    text = (tmp_path / "demo" / "bundle.json").read_text()
    assert str(tmp_path) not in text
    assert bundle.provenance["training"]["encoder"]["config"]["generator"] == "generator.pt"


def test_resume_continues_gan_and_e4e_from_the_bundle_files(tmp_path):
    out = tmp_path / "demo"
    before = train_bundle(out, STAGES, minutes=5, progress=False, stage_kwargs=TOY)
    resumed_kwargs = {**TOY, "gan": {k: v for k, v in TOY["gan"].items() if k not in ("g_kwargs", "d_kwargs")}}
    after = train_bundle(out, ["gan", "e4e"], minutes=1, progress=False, stage_kwargs=resumed_kwargs, resume=True)
    assert after is not None
    for role in ("generator", "encoder"):
        assert after.models[role].sha256 != before.models[role].sha256
    for role in ("clip", "densepose", "parser"):
        assert after.models[role].sha256 == before.models[role].sha256
    resumed_from = after.provenance["training"]["generator"]["config"]["resumed_from"]
    assert resumed_from["file"] == "generator.pt" and resumed_from["encoder_file"] == "e4e.pt"
    assert resumed_from["steps"] == 2
    assert after.provenance["training"]["encoder"]["config"]["init_from"] == "e4e.pt"
    FicePipeline.from_bundle(after, device="cpu")  # the resumed bundle still loads


def test_resume_refuses_stages_it_cannot_continue(tmp_path):
    with pytest.raises(ValueError, match="cannot resume"):
        train_bundle(tmp_path, ["gan", "densepose"], minutes=1, resume=True)
    with pytest.raises(ValueError, match="no generator.pt"):
        train_bundle(tmp_path / "empty", ["gan"], minutes=1, progress=False, stage_kwargs=TOY, resume=True)


def test_world_v2_runs_is_recorded_and_is_not_mixed_with_another_world(tmp_path):
    out = tmp_path / "demo"
    assert train_bundle(out, ["gan"], minutes=1, progress=False, stage_kwargs=TOY, world="v2") is None
    records = json.loads((out / RECORDS_FILE).read_text())
    assert records["training"]["generator"]["config"]["world"] == "v2"
    with pytest.raises(ValueError, match=r"another world: encoder \(v2\), generator \(v2\)"):
        train_bundle(out, ["clip"], minutes=1, progress=False, stage_kwargs=TOY)  # v1, the default
    with pytest.raises(ValueError, match="trained on world v2"):  # retraining the GAN on v1 from the v2 file
        train_bundle(out, ["gan"], minutes=1, progress=False, resume=True, stage_kwargs={
            "gan": {k: v for k, v in TOY["gan"].items() if k not in ("g_kwargs", "d_kwargs")}})
    with pytest.raises(ValueError, match="world"):
        train_bundle(out, ["clip"], minutes=1, progress=False, stage_kwargs=TOY, world="v3")


def test_cli_passes_the_world_on(tmp_path, monkeypatch, capsys):
    from ficekit.synthetic import train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train_bundle", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["--out", str(tmp_path), "--only", "gan", "--world", "v2", "--minutes", "1"]) == 0
    assert seen["world"] == "v2"
    assert main(["--out", str(tmp_path), "--only", "gan", "--minutes", "1"]) == 0 and seen["world"] == "v1"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--world", "v9"])
    assert "invalid choice: 'v9'" in capsys.readouterr().err
