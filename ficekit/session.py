"""EditSession: one photo edited in rounds of natural-language instructions, with undo and redo.

A session holds the photo's state across rounds: the garment state (what the garment is, as text), the masks
(rebuilt only when the garment's category, sleeve or length changes), the inversion (e4e/optimise/PTI, done
once; every round edits in the same, possibly tuned, generator), the preservation targets of the ORIGINAL
photo (so round 5 is held to the photo, not to round 4's result), and the rounds. A follow-up warm-starts from
the previous round's W+ and runs the bundle's `followup_iterations`; it never re-inverts a stitched result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .garment_state import COMMANDS as STATE_COMMANDS
from .garment_state import GarmentState, StateChange, apply_instruction
from .inputs import as_photos, to_pil
from .inversion import Inversion
from .masking import EditMasks
from .outputs import OutputWriter, PhotoOutputs, full_size

if TYPE_CHECKING:
    from PIL.Image import Image

    from .pipeline import EditResult, FicePipeline

log = logging.getLogger(__name__)

COMMANDS = tuple(STATE_COMMANDS)  # undo, redo, reset: handled by the session, not as garment changes


@dataclass
class Round:
    """One applied instruction.

    instruction: the text as typed; change: how it changed the garment state (and what was ignored);
    state: the garment state after it; text: the composed description CLIP was steered to (str(state));
    result: the EditResult of this round (one photo; images[0] is the result [3,H,W] at the photo's size);
    ws: [1, num_ws, w_dim] the round's W+; timings: seconds per stage; warm_start: started from the
    previous round's W+; masks_rebuilt: the masks were rebuilt for this round; targets: the round's objective
    targets (the original photo's, with this round's text and collage), which a follow-up of it starts from.
    """

    instruction: str
    change: StateChange
    state: GarmentState
    text: str
    result: EditResult
    ws: torch.Tensor
    timings: dict[str, float] = field(default_factory=dict)
    warm_start: bool = False
    masks_rebuilt: bool = True
    targets: Any = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        """Wall time of the round."""
        return self.timings.get("total", 0.0)

    @property
    def image(self) -> Image:
        """The result as a PIL image at the photo's size."""
        return to_pil(self.result.images[0])

    @property
    def mask(self) -> Image:
        """The blend mask (white = repainted) as a PIL image at the photo's size."""
        return to_pil(self.result.blend_full[0])


class EditSession:
    """The state of one photo being edited: `apply(text) -> Round`, `undo()`, `redo()`, `reset()`."""

    def __init__(
        self,
        pipe: FicePipeline,  # the loaded bundle
        photo: Any,  # a PIL image, path, [3,H,W] tensor in [0,1] or HWC uint8 array: exactly one photo
        check_domain: bool = True,  # refuse a photo outside the bundle's world (OutOfDomainError)
        force: bool = False,  # lift the iteration cap
        name: str | None = None,  # the photo's name in messages and file names (default: its path)
        **overrides: Any,  # EditSettings fields (iterations, followup_iterations, seed, inversion, ...)
    ) -> None:
        self.pipe = pipe
        self.settings = pipe.settings(force=force, **overrides)
        photos, names = as_photos(photo, [name] if name is not None else None)
        if len(photos) != 1:
            raise ValueError(f"a session edits one photo; got {len(photos)} (use one session per photo)")
        self.photo, self.name = photos[0], names[0]
        self.x, framings = pipe.frame([self.photo])
        self.framing = framings[0]
        self.domain_scores = pipe.check_photos(self.x, [self.name]) if check_domain else []
        self._rounds: list[Round] = []
        self._position = 0  # rounds in the current line (history = rounds[:position])
        self._pivot: Inversion | None = None
        self._masks: tuple[tuple, EditMasks] | None = None

    # ------------------------------------------------------------------ state

    @property
    def history(self) -> list[Round]:
        """The rounds that led to the current result, oldest first."""
        return self._rounds[: self._position]

    @property
    def current(self) -> Round | None:
        """The latest round of the current line, or None before the first round (or after reset/undo to it)."""
        return self._rounds[self._position - 1] if self._position else None

    @property
    def state(self) -> GarmentState | None:
        """The garment as described so far (None before the first instruction)."""
        return self.current.state if self.current else None

    @property
    def result(self) -> torch.Tensor:
        """The current result [3,H,W] in [0,1]: the last round's, or the photo itself before any round."""
        return self.current.result.images[0] if self.current else self.photo

    @property
    def image(self) -> Image:
        """`result` as a PIL image."""
        return to_pil(self.result)

    @property
    def can_undo(self) -> bool:
        """Whether undo() has a round to take back."""
        return self._position > 0

    @property
    def can_redo(self) -> bool:
        """Whether redo() has an undone round to restore."""
        return self._position < len(self._rounds)

    # ------------------------------------------------------------------ commands

    def undo(self) -> Round | None:
        """Take back the last round; returns the round now current (None = back to the photo)."""
        if not self.can_undo:
            raise ValueError("nothing to undo")
        self._position -= 1
        return self.current

    def redo(self) -> Round | None:
        """Restore the last undone round; returns it."""
        if not self.can_redo:
            raise ValueError("nothing to redo")
        self._position += 1
        return self.current

    def reset(self) -> None:
        """Back to the photo: every round is forgotten (the inversion is kept, so the next round starts fast)."""
        self._rounds.clear()
        self._position = 0

    def apply(
        self,
        text: str,
        *,
        callback: Callable[[int, torch.Tensor, torch.Tensor, dict[str, float]], None] | None = None,
        callback_every: int = 1,
        progress: bool = False,
        iterations: int | None = None,
    ) -> Round | None:
        """Apply one instruction: the first sets the garment state, a follow-up changes it ("add white stripes").

        "undo", "redo" and "reset" act as the methods of the same name (returning the round now current).
        Raises InstructionNotUnderstood when nothing in `text` can be read.
        """
        change = apply_instruction(self.state, text)
        if change.command in COMMANDS:
            if change.command == "reset":
                self.reset()
                return None
            return self.undo() if change.command == "undo" else self.redo()
        callbacks = self.pipe._callbacks(callback, callback_every)
        if iterations is not None:
            dataclasses.replace(self.settings, iterations=iterations).validate()
        return self._edit(text, change, callbacks, progress, iterations)

    # ------------------------------------------------------------------ one round

    def _edit(self, text: str, change: StateChange, callbacks: Sequence[Any], progress: bool, iterations: int | None) -> Round:
        pipe, settings = self.pipe, self.settings
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        previous = self.current
        state = self._with_category(change.state)
        instruction = state.to_instruction()
        composed = str(state)

        t = time.perf_counter()
        key = (instruction.category, instruction.attributes.sleeve, instruction.attributes.length)
        rebuilt = self._masks is None or self._masks[0] != key
        if rebuilt:
            self._masks = (key, pipe.perceive(self.x, [instruction], settings))
        masks = self._masks[1]
        timings["perception"] = time.perf_counter() - t

        t = time.perf_counter()
        if self._pivot is None:
            self._pivot = pipe.invert(self.x, settings, settings.seed, progress)  # once per session
        timings["inversion"] = time.perf_counter() - t
        pivot_ws, generator = self._pivot.ws, self._pivot.generator
        warm = previous is not None
        ws_init = previous.ws.to(pipe.device) if warm else pivot_ws
        steps = iterations or (settings.rounds_iterations if warm else settings.iterations)

        t = time.perf_counter()
        outcome, targets = pipe.optimize(
            self.x, masks, composed, ws_init, settings, generator=generator, iterations=steps, seed=settings.seed,
            callbacks=callbacks, progress=progress,
            targets=previous.targets if warm else None,  # a follow-up keeps the original photo's, from round 1
        )
        timings["optimize"] = time.perf_counter() - t
        timings["seconds_per_iteration"] = outcome.seconds_per_iteration

        t = time.perf_counter()
        painted = pipe.match_colours(outcome.generated, targets, composed, settings)
        results, blends = pipe.finish([self.photo], [self.framing], painted, masks, settings)
        timings["stitch"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start

        from .pipeline import EditResult

        result = EditResult(
            images=results, generated=outcome.generated.detach().cpu(), masks=masks.cpu(),
            ws=outcome.ws.detach().cpu(), history=outcome.history, timings=timings, instruction=instruction,
            settings=dataclasses.replace(settings, iterations=steps), blend_full=blends, instructions=[instruction],
            names=[self.name], domain_scores=list(self.domain_scores), inversion=self._pivot.record(),
            ws_init=targets.ws_init.detach().cpu(),
        )
        round_ = Round(
            instruction=text, change=change, state=state, text=composed, result=result, ws=result.ws,
            timings=timings, warm_start=warm, masks_rebuilt=rebuilt, targets=targets,
        )
        del self._rounds[self._position :]  # a new round drops the undone ones
        self._rounds.append(round_)
        self._position += 1
        log.info("round %d: %r -> %r (%.1f s)", self._position, text, composed, timings["total"])
        return round_

    def _with_category(self, state: GarmentState) -> GarmentState:
        """The state with a garment category: a text naming no garment gets CLIP's zero-shot choice, once."""
        if state.category is not None or self.settings.mask != "auto":
            return state
        remembered = self.state.category if self.state is not None else None
        if remembered is None:
            instruction = state.to_instruction()
            remembered = self.pipe.instructions_for(self.x, instruction, self.settings)[0].category
        return dataclasses.replace(state, category=remembered)

    # ------------------------------------------------------------------ previews and files

    def preview(self, generated: torch.Tensor) -> Image:
        """G(w) [1,3,R,R] (e.g. from a step callback) stitched into the photo at its size, as a PIL image."""
        masks = self._masks[1] if self._masks is not None else None
        if masks is None:
            raise ValueError("no masks yet: preview is available while or after a round runs")
        results, _ = self.pipe.finish([self.photo], [self.framing], generated.detach(), masks, self.settings)
        return to_pil(results[0])

    def save(self, out: str | Path, stem: str | None = None) -> list[PhotoOutputs]:
        """Write every round of the current line (result, grid, masks at the photo's size; suffix _round<k>) and
        a report.json into `out`; returns the files per round (the report is the writer's last file)."""
        from .outputs import check_output_dir

        stem = stem or Path(self.name).stem
        groups = []
        with OutputWriter(check_output_dir(out)) as writer:  # removes what it wrote on a failure
            for k, round_ in enumerate(self.history, start=1):
                generated, masks = full_size(round_.result, 0, self.photo)
                groups.append(writer.photo(stem, self.photo, round_.result.images[0], masks, generated, f"_round{k}"))
            writer.json(self.report(groups))
        return groups

    def report(self, groups: Sequence[PhotoOutputs] = ()) -> dict[str, Any]:
        """A JSON-ready account of the session: settings, inversion, and per round the instruction, the state,
        the composed text, timings, losses and the files written."""
        rounds = []
        for k, round_ in enumerate(self.history):
            rounds.append({
                "instruction": round_.instruction,
                "state": dataclasses.asdict(round_.state),
                "text": round_.text,
                "changed": list(round_.change.changed),
                "ignored_words": list(round_.change.ignored_words),
                "warm_start": round_.warm_start,
                "masks_rebuilt": round_.masks_rebuilt,
                "iterations": round_.result.settings.iterations,
                "timings_seconds": round_.timings,
                "final_losses": {name: values[-1] for name, values in round_.result.history.items() if values},
                "outputs": dict(groups[k].files) if k < len(groups) else {},
            })
        return {
            "photo": self.name,
            "bundle": {"name": self.pipe.bundle.name, "root": str(self.pipe.bundle.root)},
            "settings": self.settings,
            "inversion": self._pivot.record() if self._pivot is not None else {"method": self.settings.inversion},
            "domain": self.domain_scores,
            "rounds": rounds,
        }
