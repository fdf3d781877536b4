"""One browser tab's edit session, and what each control of the page does to it.

Every handler takes the tab's `Tab` (kept per tab in gr.State, never in a module global) and returns the
page's new values; a user's mistake (a file that is not a photo, a photo outside the bundle's domain, an
instruction that cannot be read) becomes a message on the page, never a traceback.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from PIL import Image

from ..imageio import read_image, to_uint8

NewSession = Callable[[torch.Tensor, str], Any]  # (photo [3, H, W] in [0, 1], its name) -> an EditSession
ProgressFn = Callable[..., Any]  # gr.Progress: progress(fraction done, desc=...)

INTRO = "**Pick an example or upload a photo**, then type an instruction such as *red t-shirt*."
BUSY = "An edit is running in this tab: wait for it or press Stop."
MASK_DIMMING = 0.7  # how far the kept part of the photo is darkened in the mask view (0 = not, 1 = black)


class EditStopped(Exception):
    """Raised inside the optimisation's step callback to stop an edit the user stopped or left."""


@dataclass(eq=False)
class Tab:
    """The photo one browser tab edits, its EditSession, and the edit running on it (if any)."""

    session: Any  # ficekit's EditSession: apply / undo / redo / reset / history / state / image / preview
    photo_name: str  # the uploaded file's name, for the page
    photo: Image.Image  # the photo as ficekit read it (the background of the mask view)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # held while an edit runs
    job: EditJob | None = field(default=None, repr=False)  # the running (or last) edit


PageView = tuple[Any, Any, list[tuple[Any, str]], str]  # mask, result, history thumbnails, status markdown


# ---------------------------------------------------------------------------------------------- status text


def _escape(text: str) -> str:
    """User text shown inside markdown, with markdown's special characters taken literally."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#|~" else ch for ch in text)


def status_markdown(tab: Tab | None, note: str = "") -> str:
    """The page's status line: the garment as the session now describes it and what the last round did."""
    if tab is None:
        return note or INTRO
    history = list(tab.session.history)
    if not history:
        text = f"**{_escape(tab.photo_name)}** is ready: type an instruction such as *red t-shirt* and press **Edit**."
    else:
        last = history[-1]
        text = f"**Garment:** {_escape(str(tab.session.state))}  \n"
        text += f"Round {len(history)}: *{_escape(last.instruction)}* ({last.seconds:.1f} s)"
        if last.change.message:
            text += f" · {_escape(last.change.message)}"
    return f"{text}  \n{note}" if note else text


def mask_view(photo: Image.Image, mask: Image.Image) -> Image.Image:
    """The photo with the repainted region (mask 1) as it is and the kept rest dimmed: where the edit acts."""
    dimmed = Image.blend(photo.convert("RGB"), Image.new("RGB", photo.size), MASK_DIMMING)
    return Image.composite(photo.convert("RGB"), dimmed, mask.convert("L").resize(photo.size))


def view(tab: Tab | None, note: str = "") -> PageView:
    """What the page shows for `tab`: the current round's mask, the current image, the rounds, the status."""
    if tab is None:
        return None, None, [], status_markdown(None, note)
    history = list(tab.session.history)
    mask = mask_view(tab.photo, history[-1].mask) if history else None
    thumbnails = [(rnd.image, f"{i}. {rnd.instruction}") for i, rnd in enumerate(history, 1)]
    return mask, tab.session.image, thumbnails, status_markdown(tab, note)


# ---------------------------------------------------------------------------------------------- the photo


def _upload_path(upload: Any) -> tuple[str, str]:
    """(path on disk, file name to show) of a gr.Image payload taken without gradio's preprocessing."""
    if isinstance(upload, Mapping):
        path = upload.get("path")
        if not path:
            raise ValueError("the upload carried no file")
        return str(path), str(upload.get("orig_name") or Path(path).name)
    return os.fspath(upload), Path(upload).name


def open_photo(upload: Any, new_session: NewSession) -> tuple[Any, ...]:
    """(new Tab, *view) for an uploaded photo or a picked example; None clears the page.

    The file is read by ficekit itself (not by gradio) so that a file that is not an image, is too large,
    or is a photo the bundle cannot edit gets ficekit's one-line message on the page, and no session.
    """
    if upload is None:
        return None, *view(None)
    try:
        path, name = _upload_path(upload)
    except ValueError as e:
        return _refused(str(e))
    try:
        photo = read_image(path)
        session = new_session(photo, name)
    except ValueError as e:  # ImageReadError, OutOfDomainError, a pixel limit: all ValueErrors by contract
        return _refused(str(e).replace(path, name))  # name the user's file, not gradio's copy of it
    tab = Tab(session=session, photo_name=name, photo=Image.fromarray(to_uint8(photo)))
    return tab, *view(tab)


def _refused(message: str) -> tuple[Any, ...]:
    """The page after a photo was refused: no session, the reason in the status line and as a notice."""
    gr.Warning(message)
    return None, *view(None, f"⚠ {_escape(message)}")


# ---------------------------------------------------------------------------------------------- editing


class EditJob:
    """`session.apply(text)` in a worker thread, handing back a preview of the result every few steps.

    The page's generator reads `previews()` and yields each to the browser; `stop()` ends the optimisation
    at its next step. The worker releases the tab's lock when it ends, so no second edit overlaps it.
    """

    def __init__(self, tab: Tab, text: str, preview_every: int) -> None:
        self.tab = tab
        self.text = text
        self.preview_every = max(1, int(preview_every))
        self.round: Any = None
        self.error: BaseException | None = None
        self._updates: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ficekit-app-edit", daemon=True)

    def start(self) -> EditJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the optimisation to stop at its next step (the session keeps its previous round)."""
        self._stopped.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _on_step(self, step: int, ws: torch.Tensor, generated: torch.Tensor, losses: Mapping[str, float]) -> None:
        if self._stopped.is_set():
            raise EditStopped("the edit was stopped")
        done = step + 1
        if done % self.preview_every == 0:
            self._updates.put((done, self.tab.session.preview(generated)))

    def _run(self) -> None:
        try:
            self.round = self.tab.session.apply(self.text, callback=self._on_step, callback_every=1, progress=False)
        except BaseException as e:  # handed to the page's thread, which shows it
            self.error = e
        finally:
            self.tab.lock.release()
            self._updates.put(None)

    def previews(self) -> Iterator[tuple[int, Any]]:
        """(steps done, preview image) as the optimisation goes, skipping previews the page had no time to show;
        ends when the worker does."""
        while True:
            latest = self._updates.get()
            while latest is not None and not self._updates.empty():
                latest = self._updates.get_nowait()
            if latest is None:
                return
            yield latest


def progress_markdown(text: str, done: int, planned: int) -> str:
    """The status line while an edit optimises: the instruction, the step, and a progress bar."""
    done = min(done, planned)
    return (
        f"Editing: *{_escape(text)}*, step {done} of {planned}  \n"
        f'<progress value="{done}" max="{planned}" style="width: 100%"></progress>'
    )


def run_edit(tab: Tab | None, text: str, preview_every: int, progress: ProgressFn) -> Iterator[PageView]:
    """Apply one instruction to the tab's session: yields live previews while it optimises, then the new round.

    An instruction the session cannot read (or any ValueError of the edit) is shown as an error and leaves the
    session as it was; an edit stopped by the user or by the tab closing ends quietly.
    """
    text = (text or "").strip()
    if tab is None:
        raise gr.Error("Pick an example or upload a photo first.")
    if not text:
        raise gr.Error("Type an instruction first, e.g. 'red t-shirt'.")
    if not tab.lock.acquire(blocking=False):
        raise gr.Error(BUSY)
    try:
        planned = _planned_steps(tab.session)
        job = tab.job = EditJob(tab, text, preview_every).start()  # from here on the worker releases the lock
    except BaseException:
        tab.lock.release()
        raise
    try:
        progress(0, desc=f"editing: {text}")
        for done, preview in job.previews():
            progress(min(1.0, done / planned), desc=f"editing: {text}")
            yield gr.skip(), preview, gr.skip(), progress_markdown(text, done, planned)
    finally:  # the page closed the generator (Stop, a new photo, the tab closed): stop the worker too
        job.stop()
    if isinstance(job.error, EditStopped):
        yield view(tab, "The edit was stopped.")
        return
    yield view(tab)  # the new round, or (after an error) the session's current one instead of a stale preview
    if isinstance(job.error, ValueError):  # InstructionNotUnderstood, a non-finite loss, ...
        raise gr.Error(str(job.error)) from job.error
    if job.error is not None:
        raise job.error


def _planned_steps(session: Any) -> int:
    """How many optimisation steps the session's next round runs (a first round or a follow-up)."""
    return session.settings.rounds_iterations if session.history else session.settings.iterations


def stop_edit(tab: Tab | None) -> None:
    """Stop the tab's running edit, if any (it ends at its next optimisation step)."""
    if tab is not None and tab.job is not None:
        tab.job.stop()


# ---------------------------------------------------------------------------------------------- history


def _history_action(tab: Tab | None, action: str) -> PageView:
    """Run session.undo / redo / reset unless an edit is running, and show the result."""
    if tab is None:
        raise gr.Error("Pick an example or upload a photo first.")
    if not tab.lock.acquire(blocking=False):
        raise gr.Error(BUSY)
    try:
        getattr(tab.session, action)()
    except ValueError as e:  # nothing to undo / redo
        return view(tab, f"⚠ {_escape(str(e))}")
    finally:
        tab.lock.release()
    return view(tab)


def undo(tab: Tab | None) -> PageView:
    """Step back one round (the page shows the previous round, or the photo)."""
    return _history_action(tab, "undo")


def redo(tab: Tab | None) -> PageView:
    """Step forward again to the round last undone."""
    return _history_action(tab, "redo")


def reset(tab: Tab | None) -> PageView:
    """Forget every round: back to the photo as uploaded."""
    return _history_action(tab, "reset")
