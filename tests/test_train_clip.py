"""The demo CLIP trainer with a tiny config: the file it writes and how it loads, budget, loss, determinism, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ficekit.bundle import load_model
from ficekit.perception.clip import ClipGuide, load_clip
from ficekit.synthetic.captions import SLEEVE_WORDS
from ficekit.synthetic.dataset import render_batch
from ficekit.synthetic.train_clip import (
    CLIP_FILE,
    PATTERN_PROMPT_WORDS,
    build_trainable_clip,
    contrastive_loss,
    default_clip_config,
    evaluate_clip,
    hard_negative_loss,
    train_clip,
)
from ficekit.synthetic.world import PALETTE, PATTERNS, SLEEVES, render_attributes

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
FAST = {"batch_size": 4, "progress": False, "model_config": TINY, "eval_samples": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_writes_a_clip_that_the_bundle_loads_with_the_same_features(tmp_path: Path) -> None:
    (tmp_path / "other.txt").write_text("keep")
    report = train_clip(tmp_path, steps=2, model_name="test-clip", **FAST)
    assert report.role == "clip" and report.spec.file == CLIP_FILE and report.spec.format == "open_clip"
    assert report.spec.kwargs == {"model_name": "test-clip", "model_config": TINY}
    assert report.steps == 2 and report.seconds > 0
    expected = {"colour_accuracy", "pattern_accuracy", "retrieval_top1", "loss_start", "loss_end", "steps_per_s"}
    assert expected <= set(report.metrics)
    assert all(math.isfinite(v) for v in report.metrics.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLIP_FILE, "other.txt"])

    loaded = load_model("clip", report.spec, tmp_path)
    assert isinstance(loaded, ClipGuide) and loaded.image_size == (32, 32) and loaded.context_length == 77
    # The trainer's construction with the file's weights = what the bundle loader builds: same
    # architecture (strict keys), same preprocessing, same tokenizer, same features.
    trained = build_trainable_clip("test-clip", TINY, seed=5)
    trained.model.load_state_dict(torch.load(tmp_path / CLIP_FILE, weights_only=True), strict=True)
    trained.model.eval()
    assert torch.equal(trained.mean, loaded.mean) and torch.equal(trained.std, loaded.std)
    images = render_batch([3, 4], 48).images  # 48 px: exercises the area resize to 32
    assert torch.equal(trained.preprocess(images), loaded.preprocess(images))
    texts = ["a red t-shirt", "a person wearing blue polka dot trousers"]
    assert torch.equal(trained.tokenize(texts), loaded.tokenize(texts))
    with torch.no_grad():
        torch.testing.assert_close(trained.encode_image(images), loaded.encode_image(images))
        torch.testing.assert_close(F.normalize(trained.model.encode_text(trained.tokenize(texts)), dim=-1),
                                   loaded.encode_text(texts))  # fmt: skip


def test_default_config_is_a_small_clip() -> None:
    cfg = default_clip_config(64)
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    assert (vision["image_size"], vision["patch_size"]) == (64, 8)
    assert 64 <= text["width"] <= 256 and 2 <= text["layers"] <= 4 and text["context_length"] == 77
    assert 128 <= cfg["embed_dim"] <= 256
    guide = load_clip("demo-clip", None, model_config=cfg)
    assert guide.image_size == (64, 64)
    assert sum(p.numel() for p in guide.parameters()) < 12_000_000
    with pytest.raises(ValueError, match="multiple of 8"):
        default_clip_config(60)


def test_time_budget_ends_training(tmp_path: Path) -> None:
    report = train_clip(tmp_path, steps=500, time_budget_s=0.5, **FAST)
    assert 1 <= report.steps < 500
    # The budget is checked before each step, so the loop ends at most one step late; slack for a loaded machine.
    assert report.seconds < 0.5 + 10.0


def test_contrastive_loss_falls_on_a_fixed_batch() -> None:
    batch = render_batch(list(range(8)), 32)
    texts = [c[0] for c in batch.captions]
    guide = build_trainable_clip("test-clip", TINY, seed=0)
    optimizer = torch.optim.Adam(guide.model.parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        loss = contrastive_loss(guide, batch.images, texts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    # Measured: 3.03 -> 0.011 (chance level is about ln 8 = 2.08).
    assert history[-1] < 0.2 * math.log(8) and history[-1] < 0.2 * history[0], history


def test_same_seed_same_weights(tmp_path: Path) -> None:
    states = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_clip(tmp_path / name, steps=2, seed=seed, **FAST)
        states[name] = torch.load(tmp_path / name / CLIP_FILE, weights_only=True)
    a, b, c = states["a"], states["b"], states["c"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


class _Oracle:
    """Stands in for a ClipGuide that knows the answer: an image's features name its top's colour, pattern and
    sleeve, a text's features the palette colour, prompt pattern word and sleeve word it mentions."""

    def __init__(self, seeds: list[int], world: str = "v1") -> None:
        self.mean = torch.zeros(1, 3, 1, 1)
        self.people = [render_attributes(s, world) for s in seeds]
        self.names = list(PALETTE) + list(PATTERNS) + list(SLEEVES)

    def _vector(self, names: list[str]) -> torch.Tensor:
        v = torch.zeros(len(self.names))
        for n in names:
            v[self.names.index(n)] = 1
        return v

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[0] == len(self.people)
        tops = [a.upper or a.dress for a in self.people]
        return F.normalize(torch.stack([self._vector([g.colour, g.pattern, g.sleeve]) for g in tops]), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            padded = f" {text} "
            names = [c for c in PALETTE if f" {c} " in padded]
            names += [p for p, word in PATTERN_PROMPT_WORDS.items() if f" {word} " in padded]
            names += [s for s in SLEEVES if f" {SLEEVE_WORDS[s][0]} " in padded]
            rows.append(self._vector(names))
        return F.normalize(torch.stack(rows), dim=-1, eps=1e-6)


@pytest.mark.parametrize("world", ["v1", "v2"])
def test_zero_shot_metrics_score_a_perfect_model_perfectly(world: str) -> None:
    seeds = list(range(40))
    metrics = evaluate_clip(_Oracle(seeds, world), seeds, size=16, world=world)
    assert metrics["colour_accuracy"] == 1.0 and metrics["pattern_accuracy"] == 1.0 and metrics["sleeve_accuracy"] == 1.0
    assert metrics["eval_garments"] == sum(render_attributes(s, world).outerwear is None for s in seeds)
    assert metrics["colour_chance"] == 1 / len(PALETTE) and metrics["pattern_chance"] == 1 / len(PATTERNS)
    assert 0.0 <= metrics["retrieval_top1"] <= 1.0


def test_init_from_continues_a_clip_of_the_same_config(tmp_path: Path) -> None:
    from ficekit.synthetic.compact import compact_checkpoint

    train_clip(tmp_path / "a", steps=2, **FAST)
    compact_checkpoint(tmp_path / "a" / "clip.pt")  # the demo bundle stores float16
    report = train_clip(tmp_path / "b", steps=1, init_from=tmp_path / "a" / "clip.pt", **FAST)
    assert report.config["init_from"].endswith("clip.pt")
    other = {**TINY, "embed_dim": 16}
    with pytest.raises(ValueError, match="init_from"):
        train_clip(tmp_path / "c", steps=1, init_from=tmp_path / "a" / "clip.pt", **{**FAST, "model_config": other})


def test_hard_negative_loss_on_known_similarities() -> None:
    image = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    scale = torch.tensor(2.0)
    tied = hard_negative_loss(image, image, image, scale)  # positive and negative equally close
    assert tied.item() == pytest.approx(math.log(2))
    opposite = -image  # cosine 1 to the positive, -1 to the negative: -log softmax = log(1 + exp(-2 * scale))
    assert hard_negative_loss(image, image, opposite, scale).item() == pytest.approx(math.log1p(math.exp(-4.0)), rel=1e-5)
    assert hard_negative_loss(image, opposite, image, scale).item() == pytest.approx(4.0 + math.log1p(math.exp(-4.0)), rel=1e-5)
    with pytest.raises(ValueError, match="shapes"):
        hard_negative_loss(image, image[:1], image, scale)


def test_hard_negatives_change_training_and_v2_is_recorded(tmp_path: Path) -> None:
    with_pairs = train_clip(tmp_path / "a", steps=2, world="v2", **FAST)
    train_clip(tmp_path / "b", steps=2, world="v2", hard_negative_weight=0.0, **FAST)
    assert with_pairs.config["world"] == "v2" and with_pairs.config["hard_negative_weight"] == 1.0
    assert "sleeve_accuracy" in with_pairs.metrics
    a, b = (torch.load(tmp_path / n / CLIP_FILE, weights_only=True) for n in ("a", "b"))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="hard_negative_weight"):
        train_clip(tmp_path / "c", steps=1, hard_negative_weight=-1.0, **FAST)
    with pytest.raises(ValueError, match="world"):
        train_clip(tmp_path / "c", steps=1, world="v7", **FAST)
