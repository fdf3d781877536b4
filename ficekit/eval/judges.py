"""Independent judges of an edited synthetic garment: its colour (palette lookup), its pattern and its type
(small CNNs) and its sleeve (arm coverage).

No judge is a model of the editing pipeline: the colour judge is a nearest-palette vote over the
garment's pixels, the sleeve judge compares the arms' pixels with the garment's and the skin's, and the
pattern and type judges are small classifiers trained only on images of the synthetic renderer (never on
generator output, never through CLIP), so an edit is not graded by the models that made it.

    judge = PatternJudge.trained(size=64)          # trains once (minutes on a CPU core), cached on disk
    judge.predict(images, masks)                   # -> ['stripes_h', 'plain', ...]
    palette_votes(image, mask)                     # -> {'red': 0.61, 'white': 0.33, ...}
    TypeJudge.trained(64, world="v2").predict(images, regions)  # -> [GarmentType('shirt', jacket=False), ...]
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ficekit.checkpoint_io import CheckpointError, atomic_write, load_torch_file
from ficekit.synthetic.body import DENSEPOSE_PARTS
from ficekit.synthetic.dataset import HELD_OUT_SEED_START, held_out_seeds
from ficekit.synthetic.render import Sample, render
from ficekit.synthetic.world import (
    DEFAULT_WORLD,
    PALETTE,
    PATTERNS,
    SKIN_TONES,
    UPPER_KINDS,
    check_world,
)

logger = logging.getLogger(__name__)

CROP_SIZE = 32  # garment crops are resized to CROP_SIZE x CROP_SIZE before the pattern CNN
JUDGE_VERSION = 1  # the pattern judge's: bump when its data, architecture or recipe changes (invalidates caches)
LEARNING_RATE = 2e-3  # the judges' training recipe (_fit): Adam, cosine schedule, batches of BATCH_SIZE crops
BATCH_SIZE = 128
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


class CropNet(nn.Module):
    """A 3-block CNN over [N, 3, S, S] crops in [0, 1] -> [N, outputs] logits, its features averaged over each cell
    of a grid x grid split of the crop (grid 1: over the whole crop; more: the head also knows where they are)."""

    def __init__(self, outputs: int, width: int = 32, grid: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, width * 2, width * 2):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.grid = grid
        self.head = nn.Linear(c_in * grid * grid, outputs)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Logits [N, outputs] for crops in [0, 1]."""
        features = self.features(crops * 2 - 1)
        pooled = features.mean(dim=(2, 3)) if self.grid == 1 else F.adaptive_avg_pool2d(features, self.grid).flatten(1)
        return self.head(pooled)


class PatternNet(CropNet):
    """CropNet over [N, 3, 32, 32] garment crops -> logits over PATTERNS."""

    def __init__(self, width: int = 32) -> None:
        super().__init__(len(PATTERNS), width)


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


def _fit(
    net: nn.Module, crops: torch.Tensor, loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int,
    gen: torch.Generator, desc: str, progress: bool,
) -> None:
    """Adam over `steps` batches of augmented crops, learning rate on a cosine to 0; `loss_of(logits, indices)` is
    the loss of a batch given the net's logits and the batch's indices into `crops` (to look its labels up)."""
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        for group in opt.param_groups:
            group["lr"] = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * step / steps))
        idx = torch.randint(len(crops), (BATCH_SIZE,), generator=gen)
        net.train()
        loss = loss_of(net(_augment(crops[idx], gen)), idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def _logits(net: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    net.eval()
    return torch.cat([net(c) for c in crops.split(256)])


def _accuracy(net: nn.Module, data: JudgeData) -> float:
    return float((_logits(net, data.crops).argmax(1) == data.labels).float().mean())


JudgeT = TypeVar("JudgeT", bound="RenderJudge")


class RenderJudge(ABC):
    """A classifier trained only on renders of one world at one size, with its held-out accuracy, kept on disk.

    The shared half of PatternJudge and TypeJudge: writing and reading the judge file, and a cache keyed by
    judge, recipe version, size and world, so a judge is trained once per machine. A subclass names itself
    (NAME, the file's prefix), versions its recipe (VERSION: bump when data, architecture or recipe change)
    and makes its net and its training.
    """

    NAME: ClassVar[str]
    VERSION: ClassVar[int]

    def __init__(self, net: nn.Module, size: int, accuracy: Any, world: str = DEFAULT_WORLD) -> None:
        self.net = net.eval().requires_grad_(False)
        self.size = size
        self.accuracy = accuracy  # on held-out renders (seeds never used for training)
        self.world = world

    @classmethod
    @abstractmethod
    def make_net(cls) -> nn.Module:
        """A fresh, untrained net of this judge."""

    @classmethod
    @abstractmethod
    def train(cls: type[JudgeT], size: int, progress: bool = True, world: str = DEFAULT_WORLD) -> JudgeT:
        """Train on `world`'s renders at `size` px from training seeds; measure on held-out renders."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the judge (weights, size, accuracy, world, version) atomically."""
        payload = {"judge": self.NAME, "version": self.VERSION, "size": self.size, "accuracy": self.accuracy,
                   "world": self.world, "state_dict": self.net.state_dict()}
        atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls: type[JudgeT], path: str | os.PathLike) -> JudgeT:
        """Read a judge written by `save`; CheckpointError when the file is corrupt, another judge's or from
        another version."""
        what = f"{cls.NAME} judge"
        payload = load_torch_file(Path(path), what)
        # files from before "judge" was recorded are pattern judges
        if not isinstance(payload, dict) or payload.get("judge", "pattern") != cls.NAME or payload.get("version") != cls.VERSION:
            raise CheckpointError(f"{what} {path}: not a version-{cls.VERSION} {what} file")
        net = cls.make_net()
        try:
            net.load_state_dict(payload["state_dict"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{what} {path}: weights do not fit the {what}'s net ({e})") from e
        return cls(net, int(payload["size"]), payload["accuracy"], str(payload.get("world", "v1")))

    @classmethod
    def cache_path(cls, size: int, cache_dir: str | os.PathLike | None = None, world: str = DEFAULT_WORLD) -> Path:
        """Where `trained` keeps the judge for `size` px of `world`: cache_dir, else $FICEKIT_CACHE, else ~/.cache/ficekit."""
        root = Path(cache_dir or os.environ.get("FICEKIT_CACHE") or Path.home() / ".cache" / "ficekit")
        fields: dict[str, object] = {"v": cls.VERSION, "size": size}
        if world != "v1":  # v1 judges keep the name they had before world versions existed
            fields["world"] = world
        key = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]
        prefix = cls.NAME if world == "v1" else f"{cls.NAME}-{world}"
        return root / "judges" / f"{prefix}-{size}px-{key}.pt"

    @classmethod
    def trained(
        cls: type[JudgeT], size: int, cache_dir: str | os.PathLike | None = None, progress: bool = True,
        world: str = DEFAULT_WORLD,
    ) -> JudgeT:
        """The judge for `size` px of `world`: read from the cache if there, else trained (deterministic) and cached."""
        path = cls.cache_path(size, cache_dir, world)
        if path.exists():
            try:
                return cls.load(path)
            except CheckpointError as e:
                logger.warning("ignoring the cached %s judge: %s", cls.NAME, e)
        judge = cls.train(size, progress=progress, world=world)
        path.parent.mkdir(parents=True, exist_ok=True)
        judge.save(path)
        return judge


class PatternJudge(RenderJudge):
    """The pattern classifier, with the render size and world it was trained for and its held-out accuracy."""

    NAME = "pattern"
    VERSION = JUDGE_VERSION
    accuracy: float

    @classmethod
    def make_net(cls) -> PatternNet:
        """A fresh PatternNet."""
        return PatternNet()

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
            # (2**31 - 1 reaches into the held-out range, 1e9 on: a chance of ~1e-5 per benchmark seed; kept so the
            # judge stays the one cached under JUDGE_VERSION 1)
            train_seeds = rng.integers(0, 2**31 - 1, size=n_train).tolist()
            train = judge_data(train_seeds, size, world)
            val = judge_data(held_out_seeds(n_val, seed=seed + 7), size, world)
            net = PatternNet()
            gen = torch.Generator().manual_seed(seed)
            _fit(net, train.crops, lambda logits, idx: F.cross_entropy(logits, train.labels[idx]), steps, gen,
                 "training pattern judge", progress)
            accuracy = _accuracy(net, val)
        logger.info("pattern judge (%s): %d train crops, held-out accuracy %.3f", world, len(train.labels), accuracy)
        return cls(net, size, accuracy, world)


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


# ----------------------------------------------------------------------------- garment type

TYPE_JUDGE_VERSION = 1  # the type judge's: bump when its data, architecture or recipe changes (invalidates caches)
# The kinds of top the type judge tells apart. Not a dress: v2's upper-body framing ends at the waist, above where
# a dress's skirt differs from a top, and draw.py gives a dress a t-shirt's neckline (a tank top's when sleeveless),
# so from the chest up the renderer draws a dress as a top.
TYPE_KINDS: tuple[str, ...] = UPPER_KINDS
# Worlds whose kinds of top the judge tells apart at 64 px (>= 95 % per question on held-out renders). Not v1: its
# small full-body figures draw a shirt's collar and placket under a pixel wide (held-out: 82-91 % of shirts read).
TYPE_JUDGED_WORLDS: tuple[str, ...] = ("v2",)
TYPE_GRID = 3  # the type CNN's features are pooled over a 3 x 3 grid: where a dark line is (placket or stripe) matters
# Kinds the renderer draws alike at the benchmark's 64 px: a sweater is a long-sleeved t-shirt whose neck ring is
# under a pixel smaller (its cuffs and ribbed hem lie below v2's frame). The judge still names one of them, but a
# reading of either counts as both (same_drawn_kind), and no type change between them is judged.
KINDS_DRAWN_ALIKE: tuple[frozenset[str], ...] = (frozenset({"tshirt", "sweater"}),)
BODY_CROP_SIZE = 48  # upper-body crops are resized to this before the type CNN
BODY_CROP_MARGIN = 1  # pixels added around the upper body's box (the anti-aliased rim of collars and sleeves)
UPPER_BODY_PARTS = tuple(DENSEPOSE_PARTS[p] for p in ("torso", "upper_arm_left", "upper_arm_right", "lower_arm_left",
                                                      "lower_arm_right"))  # fmt: skip


def same_drawn_kind(a: str, b: str) -> bool:
    """Whether kinds `a` and `b` are the same or drawn alike (KINDS_DRAWN_ALIKE), so the type judge cannot tell them."""
    return a == b or any(a in alike and b in alike for alike in KINDS_DRAWN_ALIKE)


@dataclass(frozen=True)
class GarmentType:
    """What the type judge reads off a picture: the kind of top (TYPE_KINDS; a dress reads as the top drawn like
    it) and whether an open jacket is worn over it."""

    kind: str
    jacket: bool


def upper_body_region(parts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """[H, W] bool: the torso (neck included) and arms of a DensePose I map. It does not depend on the clothes
    (garments that follow the body carry the part beneath them), so a photo's region also frames its edits."""
    return torch.isin(torch.as_tensor(np.asarray(parts)).long(), torch.tensor(UPPER_BODY_PARTS))


def body_crop(image: torch.Tensor, region: torch.Tensor | None = None, size: int = BODY_CROP_SIZE) -> torch.Tensor:
    """The box around `region` ([H, W] bool; None = the whole image) grown by BODY_CROP_MARGIN px, resized to
    [3, size, size]. Unlike garment_crop nothing is greyed: where skin shows (necklines, bare arms) is the answer."""
    if region is None:
        box = image.float()
    else:
        m = region.to(image.device).bool()
        if not bool(m.any()):
            raise ValueError("body_crop: the region selects no pixel")
        rows, cols = torch.nonzero(m.any(dim=1)).flatten(), torch.nonzero(m.any(dim=0)).flatten()
        h, w = m.shape
        y0, y1 = max(int(rows[0]) - BODY_CROP_MARGIN, 0), min(int(rows[-1]) + 1 + BODY_CROP_MARGIN, h)
        x0, x1 = max(int(cols[0]) - BODY_CROP_MARGIN, 0), min(int(cols[-1]) + 1 + BODY_CROP_MARGIN, w)
        box = image.float()[:, y0:y1, x0:x1]
    return F.interpolate(box[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass(frozen=True)
class TypeData:
    """Upper-body crops [N, 3, S, S] in [0, 1], the top's kind [N] (index into TYPE_KINDS; IGNORE_INDEX for a dress
    and under a jacket, whose sleeves hide the top's) and whether a jacket is worn [N] (0/1 floats)."""

    crops: torch.Tensor
    kinds: torch.Tensor
    jackets: torch.Tensor


IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: a crop whose kind is not a training target


def type_data(seeds: Sequence[int], size: int, world: str = DEFAULT_WORLD) -> TypeData:
    """The upper-body crop of each of `world`'s renders of `seeds` at `size` px, framed by its own DensePose."""
    crops, kinds, jackets = [], [], []
    for seed in seeds:
        sample = render(int(seed), size=size, world=world, n_captions=1)
        garments = sample.attributes.garments()
        top = garments.get("dress") or garments["upper"]
        crops.append(body_crop(sample.to_tensor(), upper_body_region(sample.densepose.I)))
        judged = "outerwear" not in garments and top.kind in TYPE_KINDS
        kinds.append(TYPE_KINDS.index(top.kind) if judged else IGNORE_INDEX)
        jackets.append(float("outerwear" in garments))
    if not crops:
        raise ValueError("type_data: no seeds")
    return TypeData(torch.stack(crops), torch.tensor(kinds), torch.tensor(jackets))


class TypeJudge(RenderJudge):
    """Reads the kind of top (TYPE_KINDS) and whether an open jacket is worn from an upper-body crop: a CropNet
    with one logit per kind and one for the jacket, trained only on renders. `accuracy` holds its held-out
    accuracy per question (accuracies): 'kind' (on renders of a top without a jacket), 'kind_as_judged' (the
    same, kinds drawn alike counting as one) and 'jacket'."""

    NAME = "type"
    VERSION = TYPE_JUDGE_VERSION
    accuracy: dict[str, float]

    @classmethod
    def make_net(cls) -> CropNet:
        """A fresh CropNet with len(TYPE_KINDS) kind logits and a jacket logit (the last)."""
        return CropNet(len(TYPE_KINDS) + 1, grid=TYPE_GRID)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, regions: torch.Tensor | None = None) -> list[GarmentType]:
        """The garment type in each image [N, 3, H, W] in [0, 1]; regions [N, H, W] bool frame the upper body
        (upper_body_region of the photo's DensePose; None = the whole image). Under a jacket the kind is a guess."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"TypeJudge.predict: need images [N, 3, H, W], got {list(images.shape)}")
        crops = torch.stack([
            body_crop(img.cpu(), None if regions is None else regions[i].cpu()) for i, img in enumerate(images)
        ])  # fmt: skip
        logits = _logits(self.net, crops)
        kinds, jackets = logits[:, :-1].argmax(1).tolist(), (logits[:, -1] > 0).tolist()
        return [GarmentType(TYPE_KINDS[k], bool(j)) for k, j in zip(kinds, jackets, strict=True)]

    @staticmethod
    def _loss(logits: torch.Tensor, data: TypeData, idx: torch.Tensor) -> torch.Tensor:
        kinds = data.kinds[idx]
        kind_loss = F.cross_entropy(logits[:, :-1], kinds) if bool((kinds != IGNORE_INDEX).any()) else logits.sum() * 0
        return kind_loss + F.binary_cross_entropy_with_logits(logits[:, -1], data.jackets[idx])

    @staticmethod
    def accuracies(net: nn.Module, data: TypeData) -> dict[str, float]:
        """Share of right answers per question: 'kind' and 'kind_as_judged' (same_drawn_kind) over the crops with
        a kind target, 'jacket' over all."""
        logits = _logits(net, data.crops)
        known = data.kinds != IGNORE_INDEX
        read, true = logits[known, :-1].argmax(1).tolist(), data.kinds[known].tolist()
        kind = float(np.mean([r == t for r, t in zip(read, true, strict=True)])) if read else math.nan
        alike = [same_drawn_kind(TYPE_KINDS[r], TYPE_KINDS[t]) for r, t in zip(read, true, strict=True)]
        return {"kind": kind, "kind_as_judged": float(np.mean(alike)) if read else math.nan,
                "jacket": float(((logits[:, -1] > 0).float() == data.jackets).float().mean())}

    @classmethod
    def train(
        cls, size: int, n_train: int = 3000, n_val: int = 600, steps: int = 800, seed: int = 0, progress: bool = True,
        world: str = DEFAULT_WORLD,
    ) -> TypeJudge:
        """Train on `world`'s renders at `size` px from the training seed range (below HELD_OUT_SEED_START, so
        disjoint from every benchmark photo); measure each question on held-out renders."""
        check_world(world)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            train_seeds = np.random.default_rng([seed, 2]).integers(0, HELD_OUT_SEED_START, size=n_train).tolist()
            train = type_data(train_seeds, size, world)
            val = type_data(held_out_seeds(n_val, seed=seed + 11), size, world)
            net = cls.make_net()
            gen = torch.Generator().manual_seed(seed)
            _fit(net, train.crops, lambda logits, idx: cls._loss(logits, train, idx), steps, gen,
                 "training type judge", progress)
            accuracy = cls.accuracies(net, val)
        logger.info("type judge (%s): %d train crops, held-out accuracy %s", world, len(train.kinds), accuracy)
        return cls(net, size, accuracy, world)
