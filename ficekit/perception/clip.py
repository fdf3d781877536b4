"""CLIP guidance through open_clip: a frozen, differentiable image path and a cached text path.

What FICE does (FICE `models/clip/model.py` and `trainer.py`, commit 7354216), reproduced here:

- image: `F.interpolate(image_01, [res, res], mode)` with mode 'area' when the image width exceeds
  the CLIP resolution `res` and 'bilinear' (align_corners=False, no antialias) otherwise — no
  center crop (its `downsample_and_crop` is never used); then (x - mean) / std with OpenAI's CLIP
  mean/std; then `encode_image`; features L2-normalised. FICE's 256x256 images and RN50x4
  (res 288) therefore take the *bilinear upsampling* branch.
- text: `clip.tokenize`, `encode_text`, detached, L2-normalised.
- similarity: image_features @ text_features.T, shape [N, T] (cosine similarity).
- loss: `(1 - similarity).sum()` — a sum over the batch (and over texts; FICE uses one text).

Here mean, std and the resolution come from the model's own open_clip preprocess config, and the
resize uses 'area' only when both sides shrink (identical to FICE for square images). Nothing here
touches open_clip's global model registry; open_clip is imported on first use, not at import time.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict, load_torch_file, require_file
from ficekit.shapes import check_shape

logger = logging.getLogger(__name__)

WHAT = "open_clip weights"
# Entries of OpenAI's TorchScript CLIP files that are metadata, not parameters.
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class ClipWeightsUnavailable(CheckpointError):
    """Pretrained CLIP weights named by an open_clip tag could not be fetched or found in the cache."""


def _open_clip() -> Any:
    """Import open_clip on first use (its import scans model configs, so not at ficekit import time)."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("ficekit.perception.clip needs open_clip: pip install open_clip_torch") from e
    return open_clip


# ---------------------------------------------------------------------------------------------------
# Differentiable image path.


def resize_mode(in_size: tuple[int, int], out_size: tuple[int, int]) -> str | None:
    """Interpolation for resizing in_size (H, W) to out_size: None = same size, 'area' when both sides
    shrink or stay (FICE's rule for square images), else 'bilinear'."""
    if tuple(in_size) == tuple(out_size):
        return None
    if in_size[0] >= out_size[0] and in_size[1] >= out_size[1]:
        return "area"
    return "bilinear"


def resize_for_clip(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [N,C,H,W] to `size` (squash, no crop) as FICE does: area when shrinking, bilinear otherwise."""
    mode = resize_mode(tuple(images.shape[-2:]), size)
    if mode is None:
        return images
    if mode == "area":
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _to_hw(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, Sequence) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    raise ValueError(f"CLIP image size: expected an int or (height, width), got {size!r}")


def _preprocess_values(model: nn.Module) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """Image size, mean and std from an open_clip model's visual preprocess config (or legacy attributes)."""
    visual = getattr(model, "visual", model)
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size", getattr(visual, "image_size", None))
    mean = cfg.get("mean", getattr(visual, "image_mean", None))
    std = cfg.get("std", getattr(visual, "image_std", None))
    if size is None or mean is None or std is None:
        raise ValueError(
            "CLIP model has no preprocess config (visual.preprocess_cfg or visual.image_size/image_mean/"
            "image_std); build it with load_clip or open_clip.create_model"
        )
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"CLIP preprocess config: expected 3-channel mean/std, got mean={mean}, std={std}")
    return _to_hw(size), tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _count_tokens(tokenizer: Any, text: str) -> int | None:
    """Tokens `text` needs including start/end tokens, or None if this tokenizer cannot say."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip SimpleTokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip HFTokenizer wraps a transformers tokenizer
    if callable(inner):
        try:
            return len(inner(text)["input_ids"])
        except Exception:  # noqa: BLE001 - counting is only for a warning
            return None
    return None


class ClipGuide(nn.Module):
    """A frozen open_clip model with a differentiable [0,1]-image path and a cached text path.

    encode_image(images [N,3,H,W] in [0,1]) -> [N,D]; encode_text(list of T texts) -> [T,D] (no grad,
    cached); similarity -> [N,T] cosine; clip_loss -> scalar Σ(1 - cos). forward = encode_image.
    The module stays in eval mode (train() is a no-op) with requires_grad False.
    """

    def __init__(
        self,
        model: nn.Module,  # open_clip CLIP / CustomTextCLIP with a preprocess config on model.visual
        tokenizer: Any,  # open_clip tokenizer for this model: list[str] -> LongTensor [T, context_length]
        text_cache_size: int = 256,  # texts whose features are kept (least recently used dropped); 0 = none
    ) -> None:
        super().__init__()
        if text_cache_size < 0:
            raise ValueError(f"text_cache_size: expected >= 0, got {text_cache_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.image_size, mean, std = _preprocess_values(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        ctx = getattr(model, "context_length", None) or getattr(tokenizer, "context_length", None)
        if not ctx:
            raise ValueError("CLIP model and tokenizer both lack a context_length")
        self.context_length = int(ctx)
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ClipGuide:
        """Frozen model: stays in eval mode whatever `mode` is."""
        return super().train(False)

    # -- image ---------------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable CLIP input for [N,3,H,W] RGB in [0,1]: resized to image_size, then (x - mean) / std."""
        check_shape("images", images, [None, 3, None, None])
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor in [0,1], got dtype {images.dtype}")
        x = resize_for_clip(images, self.image_size)
        return (x - self.mean) / self.std

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features [N,D] of [N,3,H,W] RGB in [0,1]; unit length if `normalize` (as FICE)."""
        features = self.model.encode_image(self.preprocess(images))
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image features [N,D] of [N,3,H,W] RGB in [0,1]."""
        return self.encode_image(images)

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [T, context_length]; warns (UserWarning) for each text that had to be truncated."""
        for text in texts:
            n = _count_tokens(self.tokenizer, text)
            if n is not None and n > self.context_length:
                warnings.warn(
                    f"CLIP text needs {n} tokens but the context length is {self.context_length}; "
                    f"it was truncated: {text!r}",
                    UserWarning,
                    stacklevel=3,
                )
        return self.tokenizer(list(texts), context_length=self.context_length)

    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Text features [T,D] (no gradient; unit length if `normalize`), cached per text."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts: expected a string or a non-empty list of strings, got {texts!r}")
        device = self.mean.device
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            tokens = self.tokenize(missing).to(device)
            with torch.no_grad():
                features = self.model.encode_text(tokens)
            fresh = dict(zip(missing, features.unbind(0), strict=True))
        rows = []
        for text in texts:
            row = fresh[text] if text in fresh else self._text_cache[text]
            rows.append(row.to(device))
            if self.text_cache_size:
                self._text_cache[text] = row
                self._text_cache.move_to_end(text)
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        out = torch.stack(rows)
        return F.normalize(out, dim=-1) if normalize else out

    def clear_text_cache(self) -> None:
        """Forget all cached text features."""
        self._text_cache.clear()

    @property
    def cached_texts(self) -> list[str]:
        """Texts whose features are cached, least recently used first."""
        return list(self._text_cache)

    # -- similarity and loss -------------------------------------------------------------------

    @staticmethod
    def similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [N,T] between image features [N,D] and text features [T,D]."""
        check_shape("image_features", image_features, [None, None])
        check_shape("text_features", text_features, [None, image_features.shape[1]])
        return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T

    def clip_loss(self, images: torch.Tensor, texts: str | Sequence[str]) -> torch.Tensor:
        """FICE's CLIP loss: Σ_n Σ_t (1 - cos(CLIP(image_n), CLIP(text_t))) — a sum, not a mean, over the
        batch (FICE `trainer.clip_loss_fn`: `(1 - similarity).sum()`, one text). Differentiable w.r.t. images."""
        return (1 - self.similarity(self.encode_image(images), self.encode_text(texts))).sum()


# ---------------------------------------------------------------------------------------------------
# Building and loading.


def read_model_config(config: Mapping[str, Any] | str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, preprocess overrides) from a dict or JSON file.

    Accepts an open_clip architecture config ({'embed_dim', 'vision_cfg', 'text_cfg', ...}, as in
    open_clip's model_configs/*.json) or an open_clip_config.json ({'model_cfg': ..., 'preprocess_cfg': ...}).
    """
    source = config
    if not isinstance(config, Mapping):
        p = require_file(config, "open_clip model config")
        try:
            config = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"open_clip model config: {p} is not valid JSON ({e})") from e
        if not isinstance(config, Mapping):
            raise CheckpointError(f"open_clip model config: {p} holds a {type(config).__name__}, expected an object")
    config = copy.deepcopy(dict(config))
    preprocess = dict(config.get("preprocess_cfg", {})) if "model_cfg" in config else {}
    model_cfg = dict(config["model_cfg"]) if "model_cfg" in config else config
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in model_cfg]
    if missing:
        raise ValueError(
            f"open_clip model config {source if not isinstance(source, Mapping) else ''}: lacks {missing}; "
            f"expected an open_clip architecture config (embed_dim, vision_cfg, text_cfg)"
        )
    return model_cfg, preprocess


def build_open_clip_model(model_cfg: Mapping[str, Any], quick_gelu: bool | None = None) -> nn.Module:
    """An open_clip model with random weights from an architecture config, as open_clip.create_model
    builds it (same class choice), without the global registry and without downloading tower weights."""
    oc = _open_clip()
    cfg = copy.deepcopy(dict(model_cfg))
    if quick_gelu is not None:
        cfg["quick_gelu"] = quick_gelu
    vision_cfg, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    hf_text = "hf_model_name" in text_cfg
    if hf_text:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or hf_text
    if custom_text:
        model_class = oc.CoCa if "multimodal_cfg" in cfg else oc.CustomTextCLIP
    else:
        model_class = oc.CLIP
    try:
        return model_class(**cfg)
    except TypeError as e:
        raise ValueError(f"open_clip model config does not fit {model_class.__name__}: {e}") from e


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_clip_state(path: str | os.PathLike, trust_torchscript: bool = False) -> tuple[dict[str, Any], bool]:
    """(state dict, was_torchscript) of a CLIP weights file: .safetensors, a torch file with a state dict
    (optionally under 'state_dict', keys optionally prefixed 'module.'), or OpenAI's TorchScript .pt.

    TorchScript archives are read with torch.jit.load only if `trust_torchscript` (it deserialises the
    archive's TorchScript code; only its tensors are kept). Raises CheckpointError naming the file.
    """
    p = require_file(path, WHAT)
    torchscript = False
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{WHAT}: {p} is not a readable safetensors file ({e})") from e
    elif _is_torchscript(p):
        if not trust_torchscript:
            raise CheckpointError(
                f"{WHAT}: {p} is a TorchScript archive (like OpenAI's original CLIP .pt files). Reading it "
                f"runs torch.jit.load on code stored in the file, which ficekit does only when asked: pass "
                f"trust_torchscript=True, or supply open_clip-format weights (.safetensors / .bin state dict)"
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch deprecates jit.load; the caller opted in
                obj = torch.jit.load(str(p), map_location="cpu").state_dict()
        except (RuntimeError, zipfile.BadZipFile, EOFError) as e:
            raise CheckpointError(f"{WHAT}: {p} is a truncated or corrupt TorchScript archive ({e})") from e
        torchscript = True
    else:
        obj = load_torch_file(p, WHAT)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{WHAT}: {p} holds a {type(obj).__name__}, expected a CLIP state dict")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, torchscript


def _fit_state_to_model(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """open_clip's own format fixes (as in open_clip.load_checkpoint), without positional-embedding resizing."""
    oc = _open_clip()
    own = model.state_dict()
    # TorchScript state dicts also hold non-persistent buffers (e.g. 'attn_mask') and OpenAI's metadata.
    transient = {name for name, _ in model.named_buffers() if name not in own}
    state = {k: v for k, v in state.items() if k not in transient and not (k in _OPENAI_META_KEYS and k not in own)}
    state = oc.convert.convert_state_dict(model, state)
    if "positional_embedding" in state and "positional_embedding" not in own:
        state = oc.model.convert_to_custom_text_state_dict(state)
    scale = state.get("logit_scale")
    if isinstance(scale, torch.Tensor) and "logit_scale" in own and scale.ndim != own["logit_scale"].ndim:
        state["logit_scale"] = scale.reshape(own["logit_scale"].shape)
    return state


def _looks_like_path(pretrained: str | os.PathLike) -> bool:
    if isinstance(pretrained, os.PathLike):
        return True
    return os.path.exists(pretrained) or os.sep in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES)


def _fetch_tag(model_name: str, tag: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Local path of the weights open_clip knows under (model_name, tag), from its cache or the network."""
    oc = _open_clip()
    tag_cfg = oc.pretrained.get_pretrained_cfg(model_name, tag)
    if not tag_cfg:
        raise ValueError(
            f"pretrained: {tag!r} is neither an existing file nor an open_clip tag of {model_name!r} "
            f"(its tags: {oc.list_pretrained_tags_by_model(model_name)})"
        )
    sources = ", ".join(s for s in (tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")) if s)
    logger.info("fetching open_clip weights %s/%s (open_clip cache or network: %s)", model_name, tag, sources)
    try:
        target = oc.pretrained.download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - any failure to fetch becomes one clear error
        cause: Exception | None = e
        reason = f"{type(e).__name__}: {e}"
    else:
        cause, reason = None, "open_clip returned no file"
        if target and os.path.isfile(target):
            return str(target), tag_cfg
    raise ClipWeightsUnavailable(
        f"CLIP weights for {model_name!r} tag {tag!r} could not be fetched ({reason}). Download them on a "
        f"machine with network access (sources: {sources or 'none listed'}) and pass the local file: "
        f"load_clip({model_name!r}, pretrained='/path/to/weights'{', quick_gelu=True' if tag_cfg.get('quick_gelu') else ''})"
    ) from cause


def load_clip(
    model_name: str,
    pretrained: str | os.PathLike | None = None,
    *,
    model_config: Mapping[str, Any] | str | os.PathLike | None = None,
    quick_gelu: bool | None = None,
    preprocess_cfg: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    trust_torchscript: bool = False,
    text_cache_size: int = 256,
) -> ClipGuide:
    """A frozen ClipGuide for an open_clip architecture and weights.

    Args:
        model_name: open_clip architecture ('RN50x4', 'ViT-B-32'; FICE's 'ViT-B/32' spelling works);
            with `model_config`, just a label for messages.
        pretrained: None = random weights (tests); an existing file = local weights (.safetensors,
            torch state dict, or OpenAI TorchScript with trust_torchscript); otherwise an open_clip tag
            ('openai'), fetched by open_clip from its cache or the network — only when a tag is passed.
            An unreachable tag raises ClipWeightsUnavailable saying how to pass a local file.
        model_config: custom architecture (dict or JSON file, see read_model_config); used instead of
            open_clip's built-in configs, without registering it anywhere.
        quick_gelu: QuickGELU activations (OpenAI weights need them). None = the tag's setting, True for
            an OpenAI TorchScript file, else the architecture config's.
        preprocess_cfg: overrides of the preprocess config (mean, std, size) recorded on the model.
        device: where the model is put.
        cache_dir: open_clip's download cache for tags (None = its default).
        trust_torchscript: allow torch.jit.load of TorchScript weight files.
        text_cache_size: see ClipGuide.
    Raises CheckpointError naming the file for missing/truncated/foreign weights or mismatched keys/shapes.
    """
    oc = _open_clip()
    name = model_name.replace("/", "-")
    if model_config is not None:
        model_cfg, file_preprocess = read_model_config(model_config)
    else:
        model_cfg, file_preprocess = oc.get_model_config(name), {}
        if model_cfg is None:
            raise ValueError(
                f"model_name: {model_name!r} is not an open_clip architecture (known: {oc.list_models()}); "
                f"pass model_config for a custom one"
            )
    weights_path: str | None = None
    tag_cfg: dict[str, Any] = {}
    if pretrained is not None:
        if _looks_like_path(pretrained):
            weights_path = str(require_file(pretrained, WHAT))
        elif model_config is not None:
            raise ValueError(f"pretrained: {pretrained!r} is not a file; a custom model_config needs a local file")
        else:
            weights_path, tag_cfg = _fetch_tag(name, str(pretrained), cache_dir)
    state, torchscript = read_clip_state(weights_path, trust_torchscript) if weights_path else ({}, False)
    if quick_gelu is None and tag_cfg:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if quick_gelu is None and torchscript:
        quick_gelu = True
        logger.info("%s is an OpenAI TorchScript file: building %s with QuickGELU", weights_path, name)

    model = build_open_clip_model(model_cfg, quick_gelu)
    if weights_path:
        load_state_dict_strict(model, _fit_state_to_model(model, state), weights_path, WHAT)
        logger.info("loaded CLIP %s weights from %s", name, weights_path)
    else:
        logger.info("built CLIP %s with random weights (pretrained=None)", name)

    transform = oc.transform
    final = transform.merge_preprocess_dict(transform.PreprocessCfg(), tag_cfg)
    final = transform.merge_preprocess_dict(final, file_preprocess)
    final["size"] = getattr(model.visual, "image_size", final["size"])
    final = transform.merge_preprocess_dict(final, dict(preprocess_cfg or {}))
    oc.model.set_model_preprocess_cfg(model, final)

    tokenizer = _make_tokenizer(name, model_cfg, custom=model_config is not None)
    return ClipGuide(model, tokenizer, text_cache_size=text_cache_size).to(device)


def _make_tokenizer(name: str, model_cfg: Mapping[str, Any], custom: bool) -> Any:
    """open_clip's tokenizer for a built-in name, or the one its text config asks for (custom configs)."""
    oc = _open_clip()
    if not custom:
        return oc.get_tokenizer(name)
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", oc.tokenizer.DEFAULT_CONTEXT_LENGTH)
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    if text_cfg.get("hf_tokenizer_name"):
        return oc.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"],
            context_length=context_length,
            tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **kwargs,
        )
    return oc.tokenizer.SimpleTokenizer(context_length=context_length, **kwargs)
