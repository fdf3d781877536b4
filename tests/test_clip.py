"""CLIP guidance through open_clip: image path parity, gradients, text cache, loaders and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ficekit.checkpoint_io import CheckpointError
from ficekit.perception.clip import (
    ClipGuide,
    ClipWeightsUnavailable,
    load_clip,
    resize_for_clip,
    resize_mode,
)

open_clip = pytest.importorskip("open_clip")

# A small CLIP (ViT image tower, 12-token context) so tests stay fast; same layout as open_clip's JSON configs.
TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPENAI_MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tiny() -> ClipGuide:
    torch.manual_seed(0)
    return load_clip("tiny", model_config=TINY)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - OPENAI_MEAN) / OPENAI_STD


# ---------------------------------------------------------------------------------------------------
# Image path


def test_preprocess_config_comes_from_the_model(tiny: ClipGuide, tmp_path: Path) -> None:
    assert tiny.image_size == (32, 32) and tiny.context_length == 12
    torch.testing.assert_close(tiny.mean, OPENAI_MEAN)
    torch.testing.assert_close(tiny.std, OPENAI_STD)
    assert tuple(tiny.model.visual.preprocess_cfg["size"]) == (32, 32)
    # An open_clip_config.json with its own preprocess config: mean/std follow it.
    cfg = {"model_cfg": TINY, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    other = load_clip("tiny", model_config=tmp_path / "open_clip_config.json")
    torch.testing.assert_close(other.mean, torch.full((1, 3, 1, 1), 0.5))
    torch.testing.assert_close(other.std, torch.full((1, 3, 1, 1), 0.25))
    assert other.model.visual.image_mean == [0.5, 0.5, 0.5]


def test_image_features_equal_open_clip(tiny: ClipGuide) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    ref = tiny.model.encode_image(_normalise(x))
    torch.testing.assert_close(tiny.encode_image(x, normalize=False), ref)
    torch.testing.assert_close(tiny.encode_image(x), F.normalize(ref, dim=-1))
    big = torch.rand(2, 3, 64, 64)  # shrinking: area
    ref_big = tiny.model.encode_image(_normalise(F.interpolate(big, size=(32, 32), mode="area")))
    torch.testing.assert_close(tiny.encode_image(big, normalize=False), ref_big)
    small = torch.rand(1, 3, 24, 24)  # growing: bilinear, align_corners=False
    up = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(tiny.encode_image(small, normalize=False), tiny.model.encode_image(_normalise(up)))


def test_gradients_reach_the_image(tiny: ClipGuide) -> None:
    assert not tiny.training and all(not p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.model.training, "train() must leave the frozen model in eval mode"
    x = torch.rand(2, 3, 48, 48, requires_grad=True)
    tiny.clip_loss(x, "a red dress").backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in tiny.parameters())


def test_clip_loss_is_a_sum_of_one_minus_cosine(tiny: ClipGuide) -> None:
    x = torch.rand(3, 3, 32, 32)
    texts = ["a red dress", "a blue shirt"]
    img = tiny.model.encode_image(_normalise(x))
    txt = tiny.model.encode_text(tiny.tokenizer(texts, context_length=12))
    cos = F.cosine_similarity(img[:, None, :], txt[None, :, :], dim=-1)  # [3, 2]
    torch.testing.assert_close(tiny.similarity(tiny.encode_image(x), tiny.encode_text(texts)), cos)
    torch.testing.assert_close(tiny.clip_loss(x, texts), (1 - cos).sum())
    torch.testing.assert_close(tiny.clip_loss(x, texts[0]), (1 - cos[:, 0]).sum())


def test_resize_mode_choice() -> None:
    assert resize_mode((256, 256), (288, 288)) == "bilinear"  # FICE: 256x256 images, RN50x4 at 288
    assert resize_mode((512, 512), (288, 288)) == "area"
    assert resize_mode((288, 288), (288, 288)) is None
    assert resize_mode((300, 200), (288, 288)) == "bilinear"
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # Area halving = mean of each 2x2 block, computed by hand.
    torch.testing.assert_close(resize_for_clip(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert resize_for_clip(x, (4, 4)) is x


def test_image_input_errors(tiny: ClipGuide) -> None:
    with pytest.raises(ValueError, match="images"):
        tiny.encode_image(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        tiny.encode_image(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="text_features"):
        tiny.similarity(torch.rand(2, 32), torch.rand(1, 16))


# ---------------------------------------------------------------------------------------------------
# Text path


def test_text_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    guide = load_clip("tiny", model_config=TINY, text_cache_size=2)
    batches: list[int] = []
    original = guide.model.encode_text

    def counting(tokens: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        batches.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(guide.model, "encode_text", counting)
    ab = guide.encode_text(["a", "b"])
    assert batches == [2]
    ba = guide.encode_text(["b", "a"])
    assert batches == [2], "cached texts must not be encoded again"
    torch.testing.assert_close(ba, ab.flip(0))
    guide.encode_text(["c", "c"])  # duplicates encoded once; 'b' was used before 'a', so 'b' is evicted
    assert batches == [2, 1] and guide.cached_texts == ["a", "c"]
    guide.encode_text("b")
    assert batches == [2, 1, 1]
    torch.testing.assert_close(guide.encode_text("b"), ab[1:2])
    guide.clear_text_cache()
    assert guide.cached_texts == []
    with pytest.raises(ValueError, match="texts"):
        guide.encode_text([])


def test_truncation_warning(tiny: ClipGuide) -> None:
    long = "a long sleeve silk crepe de chine shirt featuring graphic pattern printed in tones of blue"
    with pytest.warns(UserWarning, match="truncated"):
        tokens = tiny.tokenize([long])
    assert tokens.shape == (1, 12)
    torch.testing.assert_close(tokens, open_clip.get_tokenizer("RN50")([long], context_length=12))
    assert tokens[0, -1] == tiny.tokenizer.eot_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.tokenize(["a red dress"])  # 3 words + start/end tokens fit in 12


# ---------------------------------------------------------------------------------------------------
# Built-in architectures


def test_rn50x4_config() -> None:
    guide = load_clip("RN50x4")
    assert guide.image_size == (288, 288) and guide.context_length == 77
    torch.testing.assert_close(guide.mean, OPENAI_MEAN)
    x = torch.rand(1, 3, 256, 256)
    expected = _normalise(F.interpolate(x, size=(288, 288), mode="bilinear", align_corners=False))
    torch.testing.assert_close(guide.preprocess(x), expected)


def test_builder_matches_open_clip_create_model(tmp_path: Path) -> None:
    # Built-in ResNet CLIP (FICE's family): same modules, parameter names and shapes as create_model.
    reference = open_clip.create_model("RN50", pretrained=None)
    guide = load_clip("RN50")
    assert str(guide.model) == str(reference)
    assert {k: v.shape for k, v in guide.model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    # A custom config through open_clip's own loader (local-dir schema: no registry): same outputs.
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    torch.manual_seed(0)
    reference = open_clip.create_model(f"local-dir:{tmp_path}").eval()
    guide = load_clip("tiny", model_config=TINY)
    guide.model.load_state_dict(reference.state_dict())
    x = torch.rand(2, 3, 32, 32)
    tokens = open_clip.get_tokenizer(f"local-dir:{tmp_path}")(["a red dress"])
    with torch.no_grad():
        torch.testing.assert_close(guide.encode_image(x, normalize=False), reference.encode_image(_normalise(x)))
        torch.testing.assert_close(guide.encode_text("a red dress", normalize=False), reference.encode_text(tokens))


# ---------------------------------------------------------------------------------------------------
# Loading weights from files


def _features(guide: ClipGuide, x: torch.Tensor) -> torch.Tensor:
    return guide.encode_image(x, normalize=False)


@pytest.mark.parametrize("layout", ["plain", "open_clip_training", "safetensors"])
def test_local_file_formats(tiny: ClipGuide, tmp_path: Path, layout: str) -> None:
    state = tiny.model.state_dict()
    if layout == "plain":
        path = tmp_path / "tiny.pt"
        torch.save(state, path)
    elif layout == "open_clip_training":  # open_clip's training checkpoints: DDP prefix, under 'state_dict'
        path = tmp_path / "epoch_1.pt"
        torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "tiny.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(123)  # the loader's random init differs from `tiny`; only loading makes them agree
    loaded = load_clip("tiny", pretrained=path, model_config=TINY)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(_features(loaded, x), _features(tiny, x))


def test_torchscript_file_needs_trust(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = load_clip("tiny", model_config=TINY, quick_gelu=True)  # OpenAI files use QuickGELU
    path = tmp_path / "openai_style.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        torch.jit.script(original.model).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive.*trust_torchscript=True"):
        load_clip("tiny", pretrained=path, model_config=TINY)
    loaded = load_clip("tiny", pretrained=path, model_config=TINY, trust_torchscript=True)
    assert isinstance(loaded.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(_features(loaded, x), _features(original, x))
    torch.testing.assert_close(loaded.encode_text("a dress"), original.encode_text("a dress"))


def test_missing_file() -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        load_clip("tiny", pretrained="/nonexistent/clip.pt", model_config=TINY)


def test_truncated_file(tiny: ClipGuide, tmp_path: Path) -> None:
    torch.save(tiny.model.state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt|could not be read as a torch checkpoint"):
        load_clip("tiny", pretrained=tmp_path / "cut.pt", model_config=TINY)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_clip("tiny", pretrained=tmp_path / "cut.safetensors", model_config=TINY)


def test_foreign_file(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_clip("tiny", pretrained=tmp_path / "list.pt", model_config=TINY)


def test_mismatched_weights(tiny: ClipGuide, tmp_path: Path) -> None:
    state = dict(tiny.model.state_dict())
    state["text_projection"] = torch.zeros(32, 16)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"'text_projection' has shape \[32, 16\]"):
        load_clip("tiny", pretrained=tmp_path / "shape.pt", model_config=TINY)
    del state["text_projection"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="1 missing"):
        load_clip("tiny", pretrained=tmp_path / "missing.pt", model_config=TINY)


def test_bad_names_and_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        load_clip("RN51")
    with pytest.raises(ValueError, match="neither an existing file nor an open_clip tag.*openai"):
        load_clip("RN50", pretrained="no-such-tag")
    with pytest.raises(ValueError, match="custom model_config needs a local file"):
        load_clip("tiny", pretrained="openai", model_config=TINY)
    with pytest.raises(ValueError, match="lacks"):
        load_clip("tiny", model_config={"embed_dim": 32})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_clip("tiny", model_config=tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------------
# Pretrained tags (the network is never used: open_clip's download function is replaced)


def test_unreachable_tag_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(cfg: dict, *args, **kwargs) -> str:
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(ClipWeightsUnavailable, match=r"could not be fetched.*unreachable.*pretrained='/path/to"):
        load_clip("RN50x4", pretrained="openai")


def test_tag_loads_the_fetched_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The fetched file: RN50's keys and shapes, each tensor one broadcast value (tiny on disk).
    shapes = open_clip.create_model("RN50", pretrained=None).state_dict()
    state = {k: torch.full((), 0.001).expand(v.shape) for k, v in shapes.items()}
    torch.save(state, tmp_path / "rn50.pt")
    asked: list[dict] = []

    def cached(cfg: dict, *args, **kwargs) -> str:
        asked.append(cfg)
        return str(tmp_path / "rn50.pt")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", cached)
    guide = load_clip("RN50", pretrained="openai")
    assert asked and "RN50.pt" in asked[0]["url"]
    assert isinstance(guide.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    assert all(torch.all(v == 0.001) for k, v in guide.model.state_dict().items() if v.is_floating_point())
    assert guide.image_size == (224, 224)


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, ficekit.perception.clip, ficekit.perception.segmenter; "
        "assert 'open_clip' not in sys.modules, 'open_clip imported'; "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
