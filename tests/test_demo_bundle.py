"""The shipped demo bundle: complete, small, loadable offline, and the README's main command runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ficekit.bundle import load_bundle
from ficekit.edit import main as edit_main

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
MAX_BYTES = 30 * 1024 * 1024  # the demo bundle's budget in git


def test_demo_bundle_is_complete_and_within_its_size_budget():
    bundle = load_bundle("demo")  # by name, as the CLI resolves it
    assert bundle.root == DEMO.resolve()
    assert set(bundle.models) >= {"generator", "encoder", "clip", "densepose", "parser", "segmenter"}
    assert all(spec.sha256 for spec in bundle.models.values() if spec.file)
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"demo bundle is {size / 2**20:.1f} MiB"
    training = bundle.provenance["training"]
    assert all(training[role]["seconds"] > 0 for role in ("generator", "encoder", "clip", "densepose", "parser"))


def test_main_command_edits_the_example_person(tmp_path, capsys):
    torch.set_num_threads(1)
    code = edit_main(["--text", "striped cotton shirt", "--out", str(tmp_path), "--iterations", "3", "--quiet",
                      "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = sorted(tmp_path.glob("*_result.png"))
    assert results, list(tmp_path.iterdir())
    report = json.loads((tmp_path / "report.json").read_text())
    assert "striped" in json.dumps(report)


@pytest.mark.parametrize("field", ["generator", "encoder", "clip"])
def test_demo_models_load_on_the_cpu(field):
    bundle = load_bundle("demo")
    model = bundle.load(field, "cpu")
    assert not any(p.requires_grad for p in model.parameters())
