"""A bundle's domain: which photos its models know, a score that tells a photo outside it, and its calibration.

A bundle's models only work on photos like those they were trained on; the demo bundle's know ficekit's
synthetic people and paint a blur over a real portrait. bundle.json's optional `domain` record says what the
models know (one line) and names an out-of-domain score with its accepted range; `check_photos` refuses a
photo whose score falls outside the range, with a way on. Two scores:

- 'zmax/1' (calibrated, from in-domain photos): the largest normalised surprise among parts the bundle's own
  models measure. recon = log MSE of G(e4e(x)) against x (a generator cannot reconstruct what it never saw);
  parse_entropy = log mean per-pixel entropy of the parser (else the segmenter); pose_doubt = log mean of
  1 - |2p - 1| over DensePose's person probability p; person_share = mean p; background_share = the parser's
  mean background probability. Each part is z = (f - center) / scale with center the in-domain median and scale
  half the 16-84 % quantile spread; one-sided parts ('high') count only z > 0, two-sided ('both') |z|. The value
  is the largest part; the range is [0, in-domain quantile + margin].
- 'densepose_person/1' (a rule, no calibration): DensePose's person mask (p > 0.5 on the whole-image box) must
  hold exactly one region larger than `min_region` of the frame, and the largest region's share of the frame
  (the value) must lie in [low, high]. The fice bundle's record uses it.

    rec = bundle.domain                            # DomainRecord | None
    scores = score_photos(pipe, x)                 # x [N,3,R,R] in [0,1] at the generator's resolution
    check_photos(pipe, x, rec, names)              # raises OutOfDomainError (a ValueError) with one line
    rec = calibrate(pipe, in_domain_photos, description="...")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ficekit.generator import synthesize_01
from ficekit.shapes import check_shape

log = logging.getLogger(__name__)

SCORE_CALIBRATED = "zmax/1"
SCORE_PERSON = "densepose_person/1"
SCORES: tuple[str, ...] = (SCORE_CALIBRATED, SCORE_PERSON)
# Part of the calibrated score -> which side of the in-domain centre is suspicious.
PART_SIDES: dict[str, str] = {
    "recon": "high",
    "parse_entropy": "high",
    "pose_doubt": "high",
    "person_share": "both",
    "background_share": "both",
}
SIDES: tuple[str, ...] = ("high", "both")
DEFAULT_QUANTILE = 0.995  # in-domain quantile of the calibrated score that the range's upper end starts from
# Added to that quantile (z units) so a photo a little past the calibration set passes: on the demo, 0.5 accepted
# 99.3 % of 300 held-out renders and 1.0 accepted 99.7 %, refusing the same negatives but 6 % fewer rotations.
DEFAULT_MARGIN = 1.0
UNSCORABLE = 1e6  # value of a photo whose score is not finite (JSON-safe, and far outside any range)
MIN_SCALE = 1e-6  # floor of a part's scale, so a constant part cannot divide by zero
LOG_EPS = 1e-8  # keeps the log parts finite on a perfect reconstruction or a fully confident map

DEMO_DESCRIPTION = (
    "ficekit's synthetic people: one full-length person of the procedural fashion world (ficekit.synthetic) "
    "on a plain or gradient background"
)
# What the photos of each synthetic world show (ficekit.synthetic.world.WORLD_VERSIONS); v1 is DEMO_DESCRIPTION.
DEMO_DESCRIPTIONS = {
    "v1": DEMO_DESCRIPTION,
    "v2": "ficekit's synthetic people: the upper body (head to hips) of one person of the procedural fashion world "
    "(ficekit.synthetic, world v2) on a plain or gradient background",
}
DEMO_WAY_ON = (
    "the demo bundle only knows ficekit's synthetic people; for real photos run `python -m ficekit.download fice` "
    "and pass `--bundle fice`"
)


def demo_description(world: str | None) -> str:
    """The domain description of a demo bundle trained on synthetic `world` (None = v1, the default world)."""
    if world is None:
        return DEMO_DESCRIPTION
    if world not in DEMO_DESCRIPTIONS:
        raise ValueError(f"world: expected one of {tuple(DEMO_DESCRIPTIONS)}, got {world!r}")
    return DEMO_DESCRIPTIONS[world]


FICE_DESCRIPTION = "VITON-style upper-body fashion photos: one person, front view, filling much of the frame"
FICE_WAY_ON = (
    "the fice bundle knows VITON-style photos of one person's upper body; crop the photo to one person, "
    "or pass --force to edit anyway"
)


class DomainRecordError(ValueError):
    """A domain record is malformed; the message names the field (domain.<field>)."""


class OutOfDomainError(ValueError):
    """A photo lies outside its bundle's domain. `names` are the refused photos, `scores` every photo's score."""

    def __init__(self, message: str, names: list[str], scores: list[DomainScore]) -> None:
        super().__init__(message)
        self.names = names
        self.scores = scores


# ---------------------------------------------------------------------------------------------------
# Records.


@dataclass(frozen=True)
class DomainRecord:
    """bundle.json's `domain`: what the bundle's models know and the accepted range of its out-of-domain score."""

    description: str  # One line: the photos the models were trained on.
    score: str  # Score name and version, one of SCORES.
    low: float  # Lowest accepted value.
    high: float  # Highest accepted value.
    n: int = 0  # In-domain photos the range was calibrated on; 0 = a rule, not calibrated.
    stats: dict[str, Any] = field(default_factory=dict)  # The score's parameters (see check_stats).
    way_on: str = ""  # What to do with a refused photo (another bundle, a crop); "" = nothing to suggest.
    command: str | None = None  # The command that produced the record; None = not recorded.

    def __post_init__(self) -> None:
        for name in ("description", "score"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise DomainRecordError(f"domain.{name} must be a non-empty one-line string, got {value!r}")
        if self.score not in SCORES:
            raise DomainRecordError(f"domain.score must be one of {list(SCORES)}, got {self.score!r}")
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise DomainRecordError(f"domain.{name} must be a finite number, got {value!r}")
        if self.low > self.high:
            raise DomainRecordError(f"domain.low ({self.low}) must not exceed domain.high ({self.high})")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise DomainRecordError(f"domain.n must be an int >= 0, got {self.n!r}")
        if not isinstance(self.way_on, str) or "\n" in self.way_on:
            raise DomainRecordError(f"domain.way_on must be a one-line string, got {self.way_on!r}")
        if self.command is not None and not isinstance(self.command, str):
            raise DomainRecordError(f"domain.command must be a string or null, got {self.command!r}")
        if not isinstance(self.stats, Mapping):
            raise DomainRecordError(f"domain.stats must be an object, got {type(self.stats).__name__}")
        check_stats(self.score, self.stats)

    @classmethod
    def from_dict(cls, data: Any) -> DomainRecord:
        """From bundle.json's `domain` object; DomainRecordError naming the field for anything malformed."""
        if not isinstance(data, Mapping):
            raise DomainRecordError(f"domain must be an object, got {type(data).__name__}")
        known = ("description", "score", "low", "high", "n", "stats", "way_on", "command")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise DomainRecordError(f"domain: unknown key(s) {unknown}; known: {list(known)}")
        missing = [k for k in ("description", "score", "low", "high") if k not in data]
        if missing:
            raise DomainRecordError(f"domain.{missing[0]} is missing (required: description, score, low, high)")
        return cls(**{k: data[k] for k in known if k in data})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the form bundle.json holds)."""
        return {
            "description": self.description, "score": self.score, "low": self.low, "high": self.high, "n": self.n,
            "stats": _plain(self.stats), "way_on": self.way_on, "command": self.command,
        }  # fmt: skip


def check_stats(score: str, stats: Mapping[str, Any]) -> None:
    """Validate the parameters of `score`: zmax/1 {'parts': {name: {'center', 'scale', 'side'}}, 'quantile' and
    'margin' (how the range was set; informative)};
    densepose_person/1 {'threshold': (0, 1), 'min_region': [0, 1)}. Raises DomainRecordError naming the field."""
    if score == SCORE_CALIBRATED:
        unknown = sorted(set(stats) - {"parts", "quantile", "margin"})
        if unknown:
            raise DomainRecordError(
                f"domain.stats: unknown key(s) {unknown} for {score}; known: parts, quantile, margin"
            )
        parts = stats.get("parts")
        if not isinstance(parts, Mapping) or not parts:
            raise DomainRecordError("domain.stats.parts must be a non-empty object part -> {center, scale, side}")
        for name, part in parts.items():
            where = f"domain.stats.parts.{name}"
            if name not in PART_SIDES:
                raise DomainRecordError(f"{where}: unknown part; known parts: {list(PART_SIDES)}")
            if not isinstance(part, Mapping) or set(part) != {"center", "scale", "side"}:
                raise DomainRecordError(f"{where} must be an object with exactly center, scale, side, got {part!r}")
            if not _finite(part["center"]):
                raise DomainRecordError(f"{where}.center must be a finite number, got {part['center']!r}")
            if not _finite(part["scale"]) or part["scale"] <= 0:
                raise DomainRecordError(f"{where}.scale must be a finite number > 0, got {part['scale']!r}")
            if part["side"] not in SIDES:
                raise DomainRecordError(f"{where}.side must be one of {list(SIDES)}, got {part['side']!r}")
    elif score == SCORE_PERSON:
        threshold, min_region = stats.get("threshold", 0.5), stats.get("min_region", 0.02)
        if not _finite(threshold) or not 0 < threshold < 1:
            raise DomainRecordError(f"domain.stats.threshold must be a number in (0, 1), got {threshold!r}")
        if not _finite(min_region) or not 0 <= min_region < 1:
            raise DomainRecordError(f"domain.stats.min_region must be a number in [0, 1), got {min_region!r}")
        unknown = sorted(set(stats) - {"threshold", "min_region"})
        if unknown:
            raise DomainRecordError(f"domain.stats: unknown key(s) {unknown} for {score}; known: threshold, min_region")


def person_rule_record(
    description: str, low: float, high: float, way_on: str = "", threshold: float = 0.5, min_region: float = 0.02
) -> DomainRecord:
    """A rule-based record: DensePose finds one person covering a share in [low, high] of the frame."""
    return DomainRecord(
        description=description, score=SCORE_PERSON, low=low, high=high, n=0,
        stats={"threshold": threshold, "min_region": min_region}, way_on=way_on,
    )  # fmt: skip


def fice_domain_record() -> DomainRecord:
    """The fice bundle's record: VITON-style upper-body photos, checked by the DensePose one-person rule.

    The share range [0.1, 0.9] is a judgement (VITON's 256x192 upper-body photos, padded square, hold a person
    on about a third to two thirds of the frame), not a measurement: the FICE weights are not available here.
    """
    return person_rule_record(FICE_DESCRIPTION, low=0.1, high=0.9, way_on=FICE_WAY_ON)


@dataclass(frozen=True)
class DomainScore:
    """One photo's out-of-domain score: its value, whether the record's range accepts it, and its parts."""

    value: float  # The score (finite; UNSCORABLE when the models gave no finite answer).
    accepted: bool  # low <= value <= high (and, for the person rule, exactly one person).
    parts: dict[str, float]  # Part name -> value (zmax: each part's z; person rule: share, people).
    score: str = ""  # The record's score name.
    low: float = 0.0  # The record's accepted range.
    high: float = 0.0
    reason: str = ""  # Why it was refused, in words ("" when accepted).

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict for report.json: value, accepted, score, range, parts, reason."""
        return {
            "value": self.value, "accepted": self.accepted, "score": self.score, "range": [self.low, self.high],
            "parts": dict(self.parts), "reason": self.reason,
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Scoring.


def score_photos(
    pipe: Any, x: torch.Tensor, record: DomainRecord | None = None, batch_size: int = 16
) -> list[DomainScore]:
    """Score photos against `record` (default: pipe.bundle.domain); [] when there is no record.

    Args:
        pipe: has .generator, .encoder (required) and .parser, .segmenter, .densepose (may be None), as FicePipeline.
        x: [N, 3, R, R] RGB in [0, 1] at the generator's resolution R (FicePipeline fits photos so).
        record: the domain record; None = the pipe's bundle's.
        batch_size: photos scored together (bounds memory).
    """
    if record is None:
        record = getattr(getattr(pipe, "bundle", None), "domain", None)
        if record is None:
            return []
    _check_input(pipe, x)
    if record.score == SCORE_CALIBRATED:
        parts = record.stats["parts"]
        raw = measure_parts(pipe, x, list(parts), batch_size)
        return [_zmax(record, {name: float(raw[name][i]) for name in parts}) for i in range(x.shape[0])]
    shares, people = _person_regions(pipe, x, record, batch_size)
    return [_person_rule(record, share, count) for share, count in zip(shares, people, strict=True)]


def check_photos(pipe: Any, x: torch.Tensor, record: DomainRecord | None, names: Sequence[str]) -> list[DomainScore]:
    """Score `x` (as score_photos) and raise OutOfDomainError, one line naming the first refused photo, the
    bundle, its score against the range and the record's way on; a bundle without a record skips the check
    with one info line and returns []."""
    bundle = getattr(getattr(pipe, "bundle", None), "name", None) or "?"
    if record is None:
        log.info("bundle %r has no domain record; skipping the domain check", bundle)
        return []
    if len(names) != x.shape[0]:
        raise ValueError(f"names: expected one name per photo ({x.shape[0]}), got {len(names)}")
    scores = score_photos(pipe, x, record)
    refused = [i for i, s in enumerate(scores) if not s.accepted]
    if refused:
        first = scores[refused[0]]
        more = f" (and {len(refused) - 1} more photo(s))" if len(refused) > 1 else ""
        reason = f", {first.reason}" if first.reason else ""
        way_on = f"; {record.way_on}" if record.way_on else ""
        message = (
            f"{names[refused[0]]}{more}: outside the domain of bundle {bundle!r} ({record.description}): out-of-domain "
            f"score {first.value:.3g} against the in-domain range [{record.low:.3g}, {record.high:.3g}]{reason}{way_on}"
        )
        raise OutOfDomainError(" ".join(message.split()), [names[i] for i in refused], scores)
    return scores


def _check_input(pipe: Any, x: torch.Tensor) -> None:
    resolution = int(getattr(pipe, "resolution", None) or pipe.generator.img_resolution)
    check_shape("x", x, [None, 3, resolution, resolution])
    if not x.is_floating_point():
        raise ValueError(f"x: expected a float tensor in [0, 1], got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x: no photos to score")


@torch.no_grad()
def measure_parts(pipe: Any, x: torch.Tensor, parts: Sequence[str], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Raw part values [N] (before normalisation) of the calibrated score, computed by the pipe's models."""
    unknown = [p for p in parts if p not in PART_SIDES]
    if unknown:
        raise ValueError(f"unknown score part(s) {unknown}; known: {list(PART_SIDES)}")
    _check_input(pipe, x)
    segmentation = pipe.parser if getattr(pipe, "parser", None) is not None else getattr(pipe, "segmenter", None)
    needs = {"parse_entropy": segmentation, "background_share": segmentation,
             "pose_doubt": getattr(pipe, "densepose", None), "person_share": getattr(pipe, "densepose", None)}  # fmt: skip
    missing = [p for p in parts if p in needs and needs[p] is None]
    if missing:
        model = "a parser or segmenter" if missing[0] in ("parse_entropy", "background_share") else "a DensePose model"
        raise ValueError(f"the domain score part {missing[0]!r} needs {model}, which this bundle does not have")
    device = next(pipe.generator.parameters()).device
    out: dict[str, list[torch.Tensor]] = {p: [] for p in parts}
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device).float()
        if "recon" in out:
            reconstruction = synthesize_01(pipe.generator, pipe.encoder(batch))
            out["recon"].append(((reconstruction - batch) ** 2).mean(dim=(1, 2, 3)).add(LOG_EPS).log())
        if "parse_entropy" in out or "background_share" in out:
            masks = segmentation(batch)
            probs = masks.probs
            if "parse_entropy" in out:
                entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean(dim=(1, 2))
                out["parse_entropy"].append(entropy.add(LOG_EPS).log())
            if "background_share" in out:
                out["background_share"].append(masks["background"].mean(dim=(1, 2, 3)))
        if "pose_doubt" in out or "person_share" in out:
            person = _person_probability(pipe.densepose, batch)
            if "pose_doubt" in out:
                out["pose_doubt"].append((1 - (2 * person - 1).abs()).mean(dim=(1, 2)).add(LOG_EPS).log())
            if "person_share" in out:
                out["person_share"].append(person.mean(dim=(1, 2)))
    return {p: torch.cat(values).double().cpu() for p, values in out.items()}


def _person_probability(densepose: Any, x: torch.Tensor) -> torch.Tensor:
    """DensePose's person probability [N, S, S] on the whole-image box of each photo (FICE's use of DensePose)."""
    output = densepose(x)  # boxes=None: one whole-image box per photo, in photo order
    return torch.softmax(output.coarse_segm, dim=1)[:, 1:].sum(dim=1)  # 2 channels: P(person); 15: its parts' sum


def _zmax(record: DomainRecord, raw: Mapping[str, float]) -> DomainScore:
    zs: dict[str, float] = {}
    for name, part in record.stats["parts"].items():
        z = (raw[name] - part["center"]) / max(part["scale"], MIN_SCALE)
        z = abs(z) if part["side"] == "both" else max(z, 0.0)
        zs[name] = round(z, 4) if math.isfinite(z) else UNSCORABLE
    value = max(zs.values())
    accepted = record.low <= value <= record.high
    worst = max(zs, key=zs.get)
    reason = "" if accepted else f"most unusual: {worst} (z = {zs[worst]:.3g})"
    return DomainScore(value, accepted, zs, record.score, record.low, record.high, reason)


# ---------------------------------------------------------------------------------------------------
# The person rule.


@torch.no_grad()
def _person_regions(pipe: Any, x: torch.Tensor, record: DomainRecord, batch_size: int) -> tuple[list[float], list[int]]:
    """Per photo: the largest person region's share of the frame and the number of regions above min_region."""
    if getattr(pipe, "densepose", None) is None:
        raise ValueError(f"the domain score {record.score!r} needs a DensePose model, which this bundle does not have")
    device = next(pipe.densepose.parameters()).device
    threshold, min_region = record.stats.get("threshold", 0.5), record.stats.get("min_region", 0.02)
    shares, people = [], []
    for start in range(0, x.shape[0], batch_size):
        mask = _person_probability(pipe.densepose, x[start : start + batch_size].to(device).float()) > threshold
        for region_shares in region_sizes(mask):
            shares.append(max(region_shares, default=0.0))
            people.append(sum(1 for s in region_shares if s >= min_region))
    return shares, people


def region_sizes(mask: torch.Tensor) -> list[list[float]]:
    """Shares of the frame of the 8-connected regions of each boolean mask [N, H, W], largest first."""
    check_shape("mask", mask, [None, None, None])
    n, h, w = mask.shape
    labels = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w).repeat(n, 1, 1)
    labels = labels * mask
    for _ in range(h * w):  # each pass spreads the largest label one pixel; stops when nothing changes
        spread = F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0] * mask
        if torch.equal(spread, labels):
            break
        labels = spread
    out = []
    for i in range(n):
        _, counts = torch.unique(labels[i][mask[i]], return_counts=True)
        out.append(sorted((c / (h * w) for c in counts.tolist()), reverse=True))
    return out


def _person_rule(record: DomainRecord, share: float, people: int) -> DomainScore:
    in_range = record.low <= share <= record.high
    accepted = in_range and people == 1
    if accepted:
        reason = ""
    elif people == 0:
        reason = "DensePose finds no person"
    elif people > 1:
        reason = f"DensePose finds {people} people"
    else:
        reason = f"the person covers {share:.0%} of the frame"
    return DomainScore(
        share, accepted, {"person_share": share, "people": float(people)}, record.score, record.low, record.high, reason
    )


# ---------------------------------------------------------------------------------------------------
# Calibration.


def calibrate(
    pipe: Any,
    photos: torch.Tensor,
    description: str,
    way_on: str = "",
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    command: str | None = None,
    batch_size: int = 16,
) -> DomainRecord:
    """A calibrated ('zmax/1') record from in-domain `photos` [N, 3, R, R]: each part the pipe's models can
    measure is centred on its median and scaled by half its 16-84 % spread; the accepted range is
    [0, the `quantile` of the photos' scores + `margin`]."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if not _finite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if photos.shape[0] < 20:
        raise ValueError(f"calibration needs at least 20 in-domain photos, got {photos.shape[0]}")
    parts = available_parts(pipe)
    raw = measure_parts(pipe, photos, parts, batch_size)
    stats: dict[str, Any] = {"parts": {}, "quantile": quantile, "margin": margin}
    for name in parts:
        values = raw[name]
        if not torch.isfinite(values).all():
            raise ValueError(f"calibration: the {name} part is not finite on some in-domain photos")
        low, centre, high = torch.quantile(values, torch.tensor([0.1587, 0.5, 0.8413], dtype=values.dtype)).tolist()
        stats["parts"][name] = {
            "center": round(centre, 6), "scale": round(max((high - low) / 2, MIN_SCALE), 6), "side": PART_SIDES[name]
        }  # fmt: skip
    probe = DomainRecord(description, SCORE_CALIBRATED, 0.0, UNSCORABLE, photos.shape[0], stats, way_on, command)
    values = torch.tensor([_zmax(probe, {p: float(raw[p][i]) for p in parts}).value for i in range(photos.shape[0])])
    high = float(torch.quantile(values.double(), quantile)) + margin
    return DomainRecord(description, SCORE_CALIBRATED, 0.0, round(high, 4), photos.shape[0], stats, way_on, command)


def available_parts(pipe: Any) -> list[str]:
    """The calibrated score's parts this pipe's models can measure (recon always)."""
    parts = ["recon"]
    segmentation = pipe.parser if getattr(pipe, "parser", None) is not None else getattr(pipe, "segmenter", None)
    if segmentation is not None:
        parts.append("parse_entropy")
        if "background" in getattr(segmentation, "labels", {}):  # a parser without a background class has no share
            parts.append("background_share")
    if getattr(pipe, "densepose", None) is not None:
        parts += ["pose_doubt", "person_share"]
    return parts


def render_photos(n: int, seed: int, resolution: int, world: str | None = None) -> torch.Tensor:
    """`n` held-out renders of the synthetic world ([n, 3, R, R] in [0, 1]) from the held-out seed block `seed`
    (ficekit.synthetic.dataset.held_out_seeds; block 0 is the synthetic benchmark's)."""
    from ficekit.synthetic.dataset import held_out_seeds, render_batch
    from ficekit.synthetic.world import DEFAULT_WORLD

    return render_batch(held_out_seeds(n, seed), resolution, world or DEFAULT_WORLD).images


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy (dicts, lists, numbers, strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
