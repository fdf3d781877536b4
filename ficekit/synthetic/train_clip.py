"""Train the demo CLIP: a small open_clip model learned contrastively on rendered people and their captions.

    report = train_clip("out/", steps=2000, batch_size=64)   # writes out/clip.pt; spec -> bundle.json

- Architecture: an open_clip custom config (default_clip_config): a ViT with 8-px patches at 64 px, a
  causal text transformer with open_clip's BPE vocabulary and context 77, a 128-d joint space. It travels
  in bundle.json as kwargs {'model_name', 'model_config'}, which ficekit.perception.clip.load_clip builds
  without open_clip's registry; the tokenizer is the one load_clip makes for that config.
- The model is trained *inside* the ClipGuide that load_clip returns for the same config (random
  weights), so training sees exactly the preprocessing editing uses: ClipGuide.preprocess (FICE's resize
  rule, mean/std from the model's preprocess config) and ClipGuide.tokenize.
- Data: training_batches renders (disjoint from the held-out seeds), one caption drawn at random from each
  sample's phrasings every step, horizontal flips (captions never say left or right).
- Loss: open_clip's ClipLoss (symmetric InfoNCE with the learned temperature, clamped at 100 as open_clip
  does), plus a hard-negative term: each image must prefer a caption of its visible top over one that
  differs in a single attribute, colour, pattern or sleeve (captions.contrast_captions), so the gradient
  points at the named attribute rather than at whatever else tells two captions of a batch apart. AdamW, no weight decay on gains, biases, embeddings and the temperature; warm-up and cosine decay.

Speed (2 shared CPU cores, torch 2.15, one torch thread — on a busy 2-core machine one thread ran ~4x
faster than two): default config, 0.5 steps/s at batch 64, 0.8 at batch 32 (rendering is ~15% of a step).
After 118 steps at batch 32 (150 s), colour accuracy was 0.20 (chance 0.07), patterns still at chance.

Metrics come from the written clip.pt read back through the bundle loader, on held-out renders without a
jacket: zero-shot colour and pattern accuracy of the upper-body garment (top or dress; prompts such as
"a red t-shirt", "a person wearing a striped t-shirt", averaged over templates, against all palette colours /
patterns) — what tells whether CLIP can steer colour and pattern edits — and image-to-caption retrieval.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ficekit.bundle import ModelSpec, load_model
from ficekit.checkpoint_io import atomic_write
from ficekit.perception.clip import ClipGuide, load_clip
from ficekit.synthetic.captions import GARMENT_WORDS, SLEEVE_WORDS, colour_words, contrast_captions
from ficekit.synthetic.dataset import held_out_seeds, render_batch, training_batches
from ficekit.synthetic.training import Budget, TrainReport, loop_metrics, lr_factor
from ficekit.synthetic.world import DEFAULT_WORLD, PALETTE, PATTERNS, SLEEVES, check_world, render_attributes

logger = logging.getLogger(__name__)

CLIP_FILE = "clip.pt"
DEFAULT_MODEL_NAME = "demo-clip"
MAX_LOGIT_SCALE = 100.0  # open_clip clamps exp(logit_scale) here
# Words for each pattern in the zero-shot prompts (the most common caption adjective of each).
PATTERN_PROMPT_WORDS: dict[str, str] = {
    "plain": "plain", "stripes_h": "horizontal-striped", "stripes_v": "vertical-striped", "dots": "polka dot",
    "checks": "checked",
}  # fmt: skip
PROMPT_TEMPLATES: tuple[str, ...] = ("a {} {}", "a person wearing a {} {}", "a photo of a person in a {} {}")


def default_clip_config(image_size: int = 64) -> dict[str, Any]:
    """The demo CLIP architecture (open_clip config dict) for square images of `image_size` px (multiple of 8)."""
    if image_size < 16 or image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8 >= 16 (8-px patches), got {image_size}")
    return {
        "embed_dim": 128,
        "vision_cfg": {"image_size": image_size, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    }


def build_trainable_clip(model_name: str, model_config: Mapping[str, Any], seed: int = 0) -> ClipGuide:
    """A ClipGuide exactly as load_clip builds it for `model_config`, with fresh seeded weights, made trainable.

    The global RNG is left as it was. ClipGuide itself stays frozen in eval mode; its `.model` is put in
    train mode with gradients on.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        guide = load_clip(model_name, None, model_config=copy.deepcopy(dict(model_config)), text_cache_size=0)
    guide.model.train().requires_grad_(True)
    return guide


def clip_features(guide: ClipGuide, images: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image features [B, D] of images [B,3,H,W] in [0,1] and unit text features [T, D], through ClipGuide's
    preprocessing and tokenizer (with gradients)."""
    model = guide.model
    image_features = F.normalize(model.encode_image(guide.preprocess(images)), dim=-1)
    tokens = guide.tokenize(list(texts)).to(images.device)
    return image_features, F.normalize(model.encode_text(tokens), dim=-1)


def contrastive_loss(guide: ClipGuide, images: torch.Tensor, texts: Sequence[str], loss_fn: Any = None) -> torch.Tensor:
    """open_clip's ClipLoss of images [B,3,H,W] in [0,1] against their B texts, through ClipGuide's preprocessing."""
    if loss_fn is None:
        import open_clip

        loss_fn = open_clip.ClipLoss()
    if len(texts) != images.shape[0]:
        raise ValueError(f"texts: expected {images.shape[0]} (one per image), got {len(texts)}")
    image_features, text_features = clip_features(guide, images, texts)
    return loss_fn(image_features, text_features, guide.model.logit_scale.exp())


def hard_negative_loss(
    image_features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of each image choosing its positive caption over its hard negative.

    All features unit length, [B, D]; logits are scaled cosine similarities as in CLIP. log(2) when the
    image is equally close to both, 0 when it is far closer to the positive.
    """
    if not image_features.shape == positive.shape == negative.shape:
        raise ValueError(f"hard_negative_loss: shapes differ {[tuple(t.shape) for t in (image_features, positive, negative)]}")
    logits = logit_scale * torch.stack([(image_features * positive).sum(-1), (image_features * negative).sum(-1)], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`, then open_clip's clamp of the learned temperature (exp <= MAX_LOGIT_SCALE)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, float(np.log(MAX_LOGIT_SCALE)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's split (its main.py): no weight decay on 1-d parameters, norms, biases and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_clip(
    out_dir: str | os.PathLike,  # folder that receives clip.pt (created if missing; other files untouched)
    *,
    steps: int,  # maximum optimisation steps
    time_budget_s: float | None = None,  # wall-clock limit of the training loop; None = steps only
    batch_size: int = 64,  # image-caption pairs per step (the contrastive negatives)
    image_size: int = 64,  # CLIP input resolution of the default config (ignored with model_config)
    device: str | torch.device = "cpu",  # where the model trains
    seed: int = 0,  # seeds initialisation, renders, caption choice and flips
    progress: bool = True,  # show a tqdm bar
    model_config: Mapping[str, Any] | None = None,  # open_clip config dict; None = default_clip_config(image_size)
    model_name: str = DEFAULT_MODEL_NAME,  # label recorded in bundle.json
    lr: float = 1e-3,  # AdamW peak learning rate
    weight_decay: float = 0.1,  # AdamW weight decay of matrices
    render_size: int | None = None,  # side of the training renders (resized by ClipGuide.preprocess); None = image_size
    eval_samples: int = 200,  # held-out renders for the zero-shot metrics
    init_from: str | os.PathLike | None = None,  # continue from this clip.pt (same model_config); None = fresh
    hard_negative_weight: float = 1.0,  # weight of hard_negative_loss (contrast_captions pairs); 0 = plain CLIP
    world: str = DEFAULT_WORLD,  # synthetic world version of the renders (WORLD_VERSIONS)
) -> TrainReport:
    """Train a small CLIP on rendered image-caption pairs; write out_dir/clip.pt (a state dict); report.

    Returns TrainReport(role='clip', spec=ModelSpec('clip.pt', 'open_clip', {'model_name', 'model_config'}))
    with metrics colour_accuracy, pattern_accuracy (and their chance levels), retrieval_top1 (image ->
    caption among the held-out set), loss_start / loss_end, steps_per_s.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (contrastive negatives), got {batch_size}")
    if eval_samples < 2:
        raise ValueError(f"eval_samples must be >= 2, got {eval_samples}")
    if hard_negative_weight < 0:
        raise ValueError(f"hard_negative_weight must be >= 0, got {hard_negative_weight}")
    Budget(steps, time_budget_s)  # validates steps / time_budget_s before any work
    check_world(world)
    start = time.perf_counter()
    config_dict = copy.deepcopy(dict(model_config)) if model_config is not None else default_clip_config(image_size)
    size = render_size or int(config_dict["vision_cfg"]["image_size"])
    config = {
        "model_name": model_name, "batch_size": batch_size, "seed": seed, "lr": lr, "weight_decay": weight_decay,
        "render_size": size, "max_steps": steps, "time_budget_s": time_budget_s,
        "init_from": None if init_from is None else str(init_from), "hard_negative_weight": hard_negative_weight,
        "world": world,
    }  # fmt: skip
    import open_clip

    guide = build_trainable_clip(model_name, config_dict, seed).to(device)
    model = guide.model
    if init_from is not None:
        _start_from(model, init_from)
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    batches = training_batches(batch_size, size, seed=seed, world=world)
    contrast_rng = np.random.default_rng([seed, 11])
    caption_rng = np.random.default_rng([seed, 7])
    flip_rng = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    budget = Budget(steps, time_budget_s)  # the loop's clock starts now, after set-up
    bar = tqdm(total=steps, desc="training CLIP", disable=not progress)
    while budget.next():
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(budget)
        batch = next(batches)
        texts = [c[int(caption_rng.integers(len(c)))] for c in batch.captions]
        flip = torch.rand(batch_size, generator=flip_rng) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), batch.images.flip(-1), batch.images).to(device)
        if hard_negative_weight > 0:
            pairs = [contrast_captions(render_attributes(s, world), contrast_rng) for s in batch.seeds]
            image_features, text_features = clip_features(guide, images, texts + [p[0] for p in pairs] + [p[1] for p in pairs])
            caption, positive, negative = text_features.split(batch_size)
            scale = model.logit_scale.exp()
            loss = loss_fn(image_features, caption, scale)
            loss = loss + hard_negative_weight * hard_negative_loss(image_features, positive, negative, scale)
        else:
            loss = contrastive_loss(guide, images, texts, loss_fn)
        optimizer_step(model, optimizer, loss)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
    bar.close()
    train_seconds = budget.elapsed

    model.eval().requires_grad_(False)
    spec = ModelSpec(CLIP_FILE, "open_clip", {"model_name": model_name, "model_config": config_dict})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / CLIP_FILE, lambda tmp: torch.save(state, tmp))
    loaded = load_model("clip", spec, out, device=device)
    _check_same_features(guide, loaded, size, world)
    metrics = evaluate_clip(loaded, held_out_seeds(eval_samples, seed), size, world)
    metrics |= loop_metrics(losses, budget.step, train_seconds, start)
    logger.info(
        "trained CLIP: %d steps in %.1f s (%.2f steps/s); %s",
        budget.step, train_seconds, metrics["steps_per_s"], {k: round(v, 4) for k, v in metrics.items()},
    )  # fmt: skip
    return TrainReport("clip", spec, budget.step, train_seconds, metrics, config)


@torch.no_grad()
def _start_from(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a clip.pt state dict (float16-stored or not) into `model`; another architecture is refused by name."""
    from ficekit.checkpoint_io import CheckpointError, load_state_dict_strict, load_torch_file

    state = load_torch_file(path, "CLIP checkpoint to continue from")
    if not isinstance(state, Mapping):
        raise ValueError(f"train_clip: init_from {path} is not a state dict")
    try:
        load_state_dict_strict(model, state, Path(path), "CLIP checkpoint to continue from")
    except CheckpointError as e:  # missing/unexpected keys or shapes: another config
        raise ValueError(f"train_clip: init_from {path} does not fit model_config: {e}") from e


def _check_same_features(trained: ClipGuide, loaded: ClipGuide, size: int, world: str = DEFAULT_WORLD) -> None:
    """Raise RuntimeError unless the file read back by the bundle loader gives the trained model's features."""
    probe = render_batch(held_out_seeds(2, seed=99), size, world)
    device = trained.mean.device
    pairs = [
        (trained.encode_image(probe.images.to(device)), loaded.encode_image(probe.images.to(device))),
        (trained.model.encode_text(trained.tokenize(probe.captions[0]).to(device)),
         loaded.model.encode_text(loaded.tokenize(probe.captions[0]).to(device))),
    ]  # fmt: skip
    if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs):
        raise RuntimeError("train_clip: the written clip.pt, read back by the bundle loader, gives other features")


def _class_text_features(guide: ClipGuide, words: Sequence[str], nouns: Sequence[str]) -> torch.Tensor:
    """Unit text features [len(nouns), len(words), D]: each (noun, word) prompt averaged over PROMPT_TEMPLATES."""
    texts = [t.format(w, n) for n in nouns for w in words for t in PROMPT_TEMPLATES]
    feats = guide.encode_text(texts).view(len(nouns), len(words), len(PROMPT_TEMPLATES), -1).mean(2)
    return F.normalize(feats, dim=-1)


@torch.no_grad()
def evaluate_clip(guide: ClipGuide, seeds: Sequence[int], size: int, world: str = DEFAULT_WORLD) -> dict[str, float]:
    """Held-out figures of a frozen ClipGuide on `world`'s renders of `seeds` at `size` px.

    colour_accuracy / pattern_accuracy / sleeve_accuracy: the upper-body garment (top, or dress) of renders
    without a jacket, classified zero-shot among all PALETTE colours / PATTERNS / SLEEVES with prompts naming
    the garment's kind.
    retrieval_top1: image -> caption accuracy (each render's first caption among all of them).
    """
    batch = render_batch(seeds, size, world)
    device = guide.mean.device
    images = guide.encode_image(batch.images.to(device))  # [N, D] unit length
    people = [render_attributes(int(s), world) for s in seeds]
    tops = [(i, a.upper or a.dress) for i, a in enumerate(people) if a.outerwear is None]
    kinds = sorted({g.kind for _, g in tops})
    nouns = [GARMENT_WORDS[k][0] for k in kinds]
    colours, patterns = list(PALETTE), list(PATTERNS)
    colour_text = _class_text_features(guide, [colour_words(c)[0] for c in colours], nouns)
    pattern_text = _class_text_features(guide, [PATTERN_PROMPT_WORDS[p] for p in patterns], nouns)
    sleeve_text = _class_text_features(guide, [SLEEVE_WORDS[s][0] for s in SLEEVES], nouns)
    colour_hits = pattern_hits = sleeve_hits = 0
    for i, g in tops:
        k = kinds.index(g.kind)
        colour_hits += colours[int((colour_text[k] @ images[i]).argmax())] == g.colour
        pattern_hits += patterns[int((pattern_text[k] @ images[i]).argmax())] == g.pattern
        sleeve_hits += SLEEVES[int((sleeve_text[k] @ images[i]).argmax())] == g.sleeve
    captions = guide.encode_text([c[0] for c in batch.captions])  # [N, D]
    retrieved = (images @ captions.T).argmax(1).cpu()
    n_tops = max(len(tops), 1)
    return {
        "colour_accuracy": colour_hits / n_tops,
        "colour_chance": 1 / len(colours),
        "pattern_accuracy": pattern_hits / n_tops,
        "pattern_chance": 1 / len(patterns),
        "sleeve_accuracy": sleeve_hits / n_tops,
        "sleeve_chance": 1 / len(SLEEVES),
        "retrieval_top1": float((retrieved == torch.arange(len(seeds))).float().mean()),
        "retrieval_chance": 1 / len(seeds),
        "eval_garments": float(len(tops)),
    }
