"""Independent judges of an edited synthetic garment: its colour (palette lookup) and its pattern (a small CNN).

Neither judge is a model of the editing pipeline: the colour judge is a nearest-palette vote over the
garment's pixels, and the pattern judge is a small classifier trained only on garment crops of the
synthetic renderer (never on generator output, never through CLIP), so an edit is not graded by the
models that made it.

    judge = PatternJudge.trained(size=64)          # trains once (~1 min on a CPU core), cached on disk
    judge.predict(images, masks)                   # -> ['stripes_h', 'plain', ...]
    palette_votes(image, mask)                     # -> {'red': 0.61, 'white': 0.33, ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ficekit.checkpoint_io import CheckpointError, atomic_write, load_torch_file
from ficekit.synthetic.body import DENSEPOSE_PARTS
from ficekit.synthetic.dataset import held_out_seeds
from ficekit.synthetic.render import Sample, render
from ficekit.synthetic.world import DEFAULT_WORLD, PALETTE, PATTERNS, SKIN_TONES, check_world

logger = logging.getLogger(__name__)

CROP_SIZE = 32  # garment crops are resized to CROP_SIZE x CROP_SIZE before the pattern CNN
JUDGE_VERSION = 1  # bump when the judge's data, architecture or recipe changes (invalidates caches)
JUDGED_SLOTS = ("upper", "dress")  # garments the benchmark edits, hence the judge is trained on
_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = torch.tensor([PALETTE[n] for n in _PALETTE_NAMES], dtype=torch.float32) / 255


# ----------------------------------------------------------------------------- colour


def _mixed_palette() -> tuple[torch.Tensor, torch.Tensor]:
    """Every palette colour and every 50/50 mix of two ([C, 3] RGB), with each entry's palette shares [C, P]."""
    n = len(_PALETTE_NAMES)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    rgb = torch.cat([_PALETTE_RGB, torch.stack([(_PALETTE_RGB[i] + _PALETTE_RGB[j]) / 2 for i, j in pairs])])
    shares = torch.cat([torch.eye(n), torch.zeros(len(pairs), n)])
    for row, (i, j) in enumerate(pairs, start=n):
        shares[row, i] = shares[row, j] = 0.5
    return rgb, shares


_MIXED_RGB, _MIXED_SHARES = _mixed_palette()


def palette_votes(image: torch.Tensor, mask: torch.Tensor, mixes: bool = False) -> dict[str, float]:
    """Share of the masked pixels whose nearest palette colour (RGB distance) is each palette name.

    image: [3, H, W] in [0, 1]; mask: [H, W] bool (or {0, 1}). Sorted by share, largest first.
    mixes: also match 50/50 mixes of two palette colours, a pixel nearest a mix counting half for each;
        for patterned garments, whose gingham bands and anti-aliased stripe edges are such mixes (a
        black-and-orange stripe edge is brown).
    """
    if image.ndim != 3 or image.shape[0] != 3 or tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(f"palette_votes: need image [3,H,W] and mask [H,W], got {list(image.shape)} and {list(mask.shape)}")
    pixels = image.detach().float().cpu().permute(1, 2, 0)[mask.cpu().bool()]  # [K, 3]
    if pixels.shape[0] == 0:
        raise ValueError("palette_votes: the mask selects no pixel")
    colours, shares = (_MIXED_RGB, _MIXED_SHARES) if mixes else (_PALETTE_RGB, torch.eye(len(_PALETTE_NAMES)))
    nearest = torch.cdist(pixels, colours).argmin(dim=1)
    counts = shares[nearest].sum(dim=0) / pixels.shape[0]
    order = counts.argsort(descending=True, stable=True)
    return {_PALETTE_NAMES[i]: float(counts[i]) for i in order.tolist() if counts[i] > 0}


def colour_matches(votes: dict[str, float], target: str, patterned: bool, min_share: float = 0.2) -> bool:
    """Whether `target` is the garment's dominant palette colour.

    A plain garment must vote `target` first. A patterned one has two colours in similar amounts (stripes
    55/45; checks 25/50/25, the middle band a mix), so `target` must be one of its two leading colours with
    at least `min_share` of the pixels; give it votes counted with `palette_votes(..., mixes=True)`. (0.2,
    not 0.25: a gingham's own colour holds a quarter of it, less its anti-aliased edges.)
    """
    if target not in PALETTE:
        raise ValueError(f"colour_matches: {target!r} is not a palette colour {tuple(PALETTE)}")
    ranked = list(votes)
    if not ranked:
        return False
    if not patterned:
        return ranked[0] == target
    return target in ranked[:2] and votes[target] >= min_share


# ----------------------------------------------------------------------------- pattern


def garment_crop(image: torch.Tensor, mask: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """The garment's bounding box, pixels outside the mask set to 0.5 grey, resized to [3, size, size].

    Cropping to the box makes the judge see the pattern at a similar scale whatever the garment's size;
    greying the rest hides the skin, background and other garments.
    """
    m = mask.to(image.device).bool()
    if not bool(m.any()):
        raise ValueError("garment_crop: the mask selects no pixel")
    rows, cols = torch.nonzero(m.any(dim=1)).flatten(), torch.nonzero(m.any(dim=0)).flatten()
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    grey = torch.full_like(image, 0.5)
    masked = torch.where(m[None], image.float(), grey)[:, y0:y1, x0:x1]
    return F.interpolate(masked[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


class PatternNet(nn.Module):
    """A 3-block CNN over [N, 3, 32, 32] garment crops -> logits over PATTERNS."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, width * 2, width * 2):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, len(PATTERNS))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Pattern logits [N, len(PATTERNS)] for crops in [0, 1]."""
        return self.head(self.features(crops * 2 - 1).mean(dim=(2, 3)))


@dataclass(frozen=True)
class JudgeData:
    """Garment crops [N, 3, CROP_SIZE, CROP_SIZE] in [0, 1] with pattern indices [N] (into PATTERNS)."""

    crops: torch.Tensor
    labels: torch.Tensor


def judge_data(seeds: Sequence[int], size: int, world: str = DEFAULT_WORLD) -> JudgeData:
    """Crops of every judged garment (JUDGED_SLOTS, not under a jacket) of `world`'s renders of `seeds` at `size` px."""
    crops, labels = [], []
    for seed in seeds:
        sample = render(int(seed), size=size, world=world, n_captions=1)
        for slot, garment in sample.attributes.garments().items():
            if slot not in JUDGED_SLOTS:
                continue
            mask = torch.from_numpy(sample.mask(slot))
            if int(mask.sum()) < 16:
                continue
            crops.append(garment_crop(sample.to_tensor(), mask))
            labels.append(PATTERNS.index(garment.pattern))
    if not crops:
        raise ValueError("judge_data: no judged garment in these renders")
    return JudgeData(torch.stack(crops), torch.tensor(labels))


def _augment(crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, contrast, brightness and noise, so generated (softer, noisier) garments are judged like renders."""
    n = crops.shape[0]
    sigma = torch.rand(n, generator=gen) * 1.0
    x = crops
    kernel_x = torch.arange(-2, 3, dtype=torch.float32)
    weights = torch.exp(-(kernel_x[None] ** 2) / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    weights = weights / weights.sum(dim=1, keepdim=True)  # [N, 5]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    x = sum(weights[:, i, None, None, None] * padded[..., 2:-2, i : i + x.shape[-1]] for i in range(5))
    padded = F.pad(x, (0, 0, 2, 2), mode="replicate")
    x = sum(weights[:, i, None, None, None] * padded[..., i : i + crops.shape[-2], :] for i in range(5))
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
    shift = 0.1 * (torch.rand(n, 3, 1, 1, generator=gen) - 0.5)
    x = (x - 0.5) * contrast + 0.5 + shift + 0.03 * torch.randn(x.shape, generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.clamp(0, 1)


@torch.no_grad()
def _accuracy(net: PatternNet, data: JudgeData) -> float:
    net.eval()
    predicted = torch.cat([net(c).argmax(1) for c in data.crops.split(256)])
    return float((predicted == data.labels).float().mean())


class PatternJudge:
    """The pattern classifier, with the render size and world it was trained for and its held-out accuracy."""

    def __init__(self, net: PatternNet, size: int, accuracy: float, world: str = DEFAULT_WORLD) -> None:
        self.net = net.eval().requires_grad_(False)
        self.size = size
        self.accuracy = accuracy  # on held-out renders (seeds never used for training)
        self.world = world

    @torch.no_grad()
    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> list[str]:
        """Pattern names of the masked garment of each image [N, 3, H, W] in [0, 1] (masks [N, H, W])."""
        crops = torch.stack([garment_crop(img.cpu(), m.cpu()) for img, m in zip(images, masks, strict=True)])
        return [PATTERNS[i] for i in self.net(crops).argmax(1).tolist()]

    @classmethod
    def train(
        cls, size: int, n_train: int = 6000, n_val: int = 600, steps: int = 1500, seed: int = 0, progress: bool = True,
        world: str = DEFAULT_WORLD,
    ) -> PatternJudge:
        """Train on `world`'s renders at `size` px from the training seed range; report accuracy on held-out renders."""
        check_world(world)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            train_seeds = rng.integers(0, 2**31 - 1, size=n_train).tolist()
            train = judge_data(train_seeds, size, world)
            val = judge_data(held_out_seeds(n_val, seed=seed + 7), size, world)
            net = PatternNet()
            opt = torch.optim.Adam(net.parameters(), lr=2e-3)
            gen = torch.Generator().manual_seed(seed)
            for step in tqdm(range(steps), desc="training pattern judge", disable=not progress):
                for group in opt.param_groups:
                    group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
                idx = torch.randint(len(train.labels), (128,), generator=gen)
                net.train()
                loss = F.cross_entropy(net(_augment(train.crops[idx], gen)), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            accuracy = _accuracy(net, val)
        logger.info("pattern judge (%s): %d train crops, held-out accuracy %.3f", world, len(train.labels), accuracy)
        return cls(net, size, accuracy, world)

    def save(self, path: str | os.PathLike) -> None:
        """Write the judge (weights, size, accuracy, version) atomically."""
        payload = {"version": JUDGE_VERSION, "size": self.size, "accuracy": self.accuracy, "world": self.world,
                   "state_dict": self.net.state_dict()}
        atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PatternJudge:
        """Read a judge written by `save`; CheckpointError when the file is corrupt or from another version."""
        payload = load_torch_file(Path(path), "pattern judge")
        if not isinstance(payload, dict) or payload.get("version") != JUDGE_VERSION:
            raise CheckpointError(f"pattern judge {path}: not a version-{JUDGE_VERSION} judge file")
        net = PatternNet()
        net.load_state_dict(payload["state_dict"])
        return cls(net, int(payload["size"]), float(payload["accuracy"]), str(payload.get("world", "v1")))

    @staticmethod
    def cache_path(size: int, cache_dir: str | os.PathLike | None = None, world: str = DEFAULT_WORLD) -> Path:
        """Where `trained` keeps the judge for `size` px of `world`: cache_dir, else $FICEKIT_CACHE, else ~/.cache/ficekit."""
        root = Path(cache_dir or os.environ.get("FICEKIT_CACHE") or Path.home() / ".cache" / "ficekit")
        fields: dict[str, object] = {"v": JUDGE_VERSION, "size": size}
        if world != "v1":  # v1 judges keep the name they had before world versions existed
            fields["world"] = world
        key = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]
        prefix = "pattern" if world == "v1" else f"pattern-{world}"
        return root / "judges" / f"{prefix}-{size}px-{key}.pt"

    @classmethod
    def trained(
        cls, size: int, cache_dir: str | os.PathLike | None = None, progress: bool = True, world: str = DEFAULT_WORLD
    ) -> PatternJudge:
        """The judge for `size` px of `world`: read from the cache if there, else trained (deterministic) and cached."""
        path = cls.cache_path(size, cache_dir, world)
        if path.exists():
            try:
                return cls.load(path)
            except CheckpointError as e:
                logger.warning("ignoring the cached pattern judge: %s", e)
        judge = cls.train(size, progress=progress, world=world)
        path.parent.mkdir(parents=True, exist_ok=True)
        judge.save(path)
        return judge


# ----------------------------------------------------------------------------- sleeve

# DensePose parts of the arms (body.py): upper arms 15/16, forearms 19/20. V runs along a limb from the
# joint nearer the torso (0) to the far one (1), U across it (0.5 = the axis).
UPPER_ARM_PARTS = (15, 16)
FOREARM_PARTS = (19, 20)
ARM_STRIP = 0.25  # |U - 0.5| below this: the arm's central strip, inside the bare arm whatever sleeve the photo had
SHOULDER_SPAN = (0.08, 0.42)  # V along the upper arm that a short sleeve covers (it ends at V = 0.5)
ELBOW_SPAN = (0.62, 1.0)  # V along the upper arm that only a long sleeve covers
MIN_ARM_PIXELS = 4  # fewer visible pixels in a region than this: the region says nothing
CHEST_HALF_WIDTH = 0.25  # torso |U - 0.5| below this and V (neck 0, crotch 1) above CHEST_TOP: the chest's middle
CHEST_TOP = 0.25
GARMENT_REFERENCE_PIXELS = 512  # at most this many garment pixels serve as the garment's colour reference


def arm_regions(parts: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
    """[H, W] bool masks of where sleeves show, from a photo's DensePose I, U, V ([H, W] each).

    'shoulder': the upper arms' central strip near the shoulder (any sleeve covers it);
    'elbow': the upper arms' central strip near the elbow (only a long sleeve covers it).
    """
    central = (u.float() - 0.5).abs() < ARM_STRIP
    upper = torch.isin(parts.long(), torch.tensor(UPPER_ARM_PARTS)) & central
    v = v.float()
    return {
        "shoulder": upper & (v >= SHOULDER_SPAN[0]) & (v <= SHOULDER_SPAN[1]),
        "elbow": upper & (v >= ELBOW_SPAN[0]) & (v <= ELBOW_SPAN[1]),
    }


def sleeve_coverage(
    image: torch.Tensor, regions: dict[str, torch.Tensor], skin_rgb: torch.Tensor, garment_mask: torch.Tensor
) -> dict[str, float]:
    """Share of each arm region's pixels that look like the garment rather than skin (NaN: region not visible).

    A pixel counts as garment when its RGB distance to the nearest of the garment's own pixels (the garment
    mask's pixels of `image`, so an edited garment is compared with its new colours) is below its distance to
    `skin_rgb` ([3] in [0, 1]). image: [3, H, W] in [0, 1]; garment_mask: [H, W] bool, the garment's torso part.
    """
    pixels = image.detach().float().cpu()
    garment = pixels.permute(1, 2, 0)[garment_mask.cpu().bool()]
    if garment.shape[0] == 0:
        raise ValueError("sleeve_coverage: the garment mask selects no pixel")
    step = max(1, garment.shape[0] // GARMENT_REFERENCE_PIXELS)
    garment = garment[::step]
    skin = skin_rgb.float().reshape(1, 3)
    shares: dict[str, float] = {}
    for name, region in regions.items():
        arm = pixels.permute(1, 2, 0)[region.cpu().bool()]
        if arm.shape[0] < MIN_ARM_PIXELS:
            shares[name] = float("nan")
            continue
        to_garment = torch.cdist(arm, garment).min(dim=1).values
        to_skin = torch.cdist(arm, skin)[:, 0]
        shares[name] = float((to_garment < to_skin).float().mean())
    return shares


def sleeve_from_coverage(coverage: dict[str, float]) -> str:
    """'sleeveless', 'short' or 'long' from `sleeve_coverage`'s shares: covered near the shoulder means a sleeve,
    covered near the elbow too means a long one ('sleeveless' when no arm is visible)."""
    shoulder, elbow = coverage["shoulder"], coverage["elbow"]
    if not shoulder >= 0.5:  # also NaN: no visible arm
        return "sleeveless"
    return "long" if elbow >= 0.5 else "short"


def judge_sleeve(image: torch.Tensor, photo: Sample, slot: str) -> str:
    """The sleeve length of `slot`'s garment ('upper' or 'dress') in `image` ([3, H, W] in [0, 1]), an edit of
    the rendered `photo`: arm regions from the photo's DensePose, skin from its skin tone, garment colours
    from `image` over the photo's garment pixels in the middle of the chest (away from necklines and armholes,
    which an edit may bare)."""
    if tuple(image.shape[1:]) != tuple(photo.image.shape[:2]):
        raise ValueError(f"judge_sleeve: image is {tuple(image.shape[1:])} px, the photo {photo.image.shape[:2]}")
    dp = photo.densepose
    regions = arm_regions(torch.from_numpy(dp.I), torch.from_numpy(dp.U), torch.from_numpy(dp.V))
    chest = (dp.I == DENSEPOSE_PARTS["torso"]) & (abs(dp.U - 0.5) < CHEST_HALF_WIDTH) & (dp.V > CHEST_TOP)
    torso = torch.from_numpy(photo.mask(slot) & chest)
    skin = torch.tensor(SKIN_TONES[photo.attributes.skin], dtype=torch.float32) / 255
    return sleeve_from_coverage(sleeve_coverage(image, regions, skin, torso))
