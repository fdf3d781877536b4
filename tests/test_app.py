"""The web page's handlers without a browser: ficekit.app.tab on the demo bundle's real EditSession, and
`python -m ficekit.app`'s option checks. The page in a real browser is tests/test_app_browser.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'ficekit[app]')")

from ficekit.app import tab as actions  # noqa: E402
from ficekit.app.__main__ import main  # noqa: E402

ITERATIONS = 2


@pytest.fixture(scope="module")
def pipe():
    from ficekit import FicePipeline

    torch.set_num_threads(1)
    return FicePipeline.from_bundle("demo", device="cpu")


@pytest.fixture(scope="module")
def example(pipe) -> str:
    return str(pipe.bundle.example_images[0])


@pytest.fixture
def new_session(pipe):
    return lambda photo, name: pipe.session(photo, name=name, iterations=ITERATIONS, followup_iterations=ITERATIONS)


def _edit(tab: actions.Tab, text: str, preview_every: int = 1) -> tuple[list[tuple], list[float]]:
    """Every value run_edit yields, and every fraction it reported to the progress bar."""
    fractions: list[float] = []
    updates = list(actions.run_edit(tab, text, preview_every, lambda value, desc=None: fractions.append(value)))
    return updates, fractions


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------------ opening


def test_open_example_gives_a_fresh_tab(example: str, new_session) -> None:
    tab, mask, result, thumbnails, status = actions.open_photo({"path": example, "orig_name": "me.png"}, new_session)
    assert isinstance(tab, actions.Tab) and tab.photo_name == "me.png"
    assert mask is None and thumbnails == []
    np.testing.assert_array_equal(_pixels(result), _pixels(Image.open(example)))  # the photo, before any round
    assert "me.png" in status and "ready" in status


def test_open_nothing_clears_the_page(new_session) -> None:
    assert actions.open_photo(None, new_session) == (None, None, None, [], actions.INTRO)


def test_a_file_that_is_not_an_image_is_a_message(tmp_path: Path, new_session) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.warns(UserWarning, match="cannot read image"):
        tab, mask, result, thumbnails, status = actions.open_photo({"path": str(bad), "orig_name": "me.png"}, new_session)
    assert tab is None and result is None and "cannot read image" in status
    assert "me.png" in status and str(tmp_path) not in status  # the user's file name, not the server's path


def test_a_photo_over_the_pixel_limit_is_a_message(example: str, new_session, monkeypatch) -> None:
    import ficekit.imageio

    monkeypatch.setattr(ficekit.imageio, "MAX_PIXELS", 100)  # the 128x128 example is then too large
    with pytest.warns(UserWarning, match="megapixels"):
        tab, *_, status = actions.open_photo(example, new_session)
    assert tab is None and "megapixels" in status


def test_a_session_refusing_the_photo_is_a_message(example: str) -> None:
    from ficekit import OutOfDomainError

    def refuse(photo: torch.Tensor, name: str):
        raise OutOfDomainError(f"{name} is outside the demo bundle's world", [name], [])

    with pytest.warns(UserWarning, match="outside"):
        tab, *_, status = actions.open_photo(example, refuse)
    assert tab is None and "outside the demo bundle" in status


# ------------------------------------------------------------------------------------------------ editing


def test_two_rounds_with_previews_then_undo_redo_reset(example: str, new_session) -> None:
    tab = actions.open_photo(example, new_session)[0]
    photo = _pixels(tab.session.image)

    updates, fractions = _edit(tab, "red t-shirt")
    previews = [u for u in updates[:-1] if isinstance(u[1], Image.Image)]
    assert previews, "live previews while optimising"
    assert all(u[0] == gr.skip() and u[2] == gr.skip() for u in previews)  # only the result and status change
    assert f"of {ITERATIONS}" in previews[0][3]
    assert fractions[0] == 0 and fractions[-1] == 1 and fractions == sorted(fractions)
    mask, first, thumbnails, status = updates[-1]
    assert [caption for _, caption in thumbnails] == ["1. red t-shirt"]
    assert mask.size == first.size == Image.open(example).size
    assert "Round 1" in status and "red" in status
    assert np.abs(_pixels(first) - photo).max() > 0

    *_, (_, second, thumbnails, status) = _edit(tab, "add white stripes")[0]
    assert [caption for _, caption in thumbnails] == ["1. red t-shirt", "2. add white stripes"]
    assert "Round 2" in status and "red" in status and "stripes" in status
    assert np.abs(_pixels(second) - _pixels(first)).max() > 0

    _, result, thumbnails, status = actions.undo(tab)
    np.testing.assert_array_equal(_pixels(result), _pixels(first))
    assert len(thumbnails) == 1 and "Round 1" in status
    _, result, thumbnails, _ = actions.redo(tab)
    np.testing.assert_array_equal(_pixels(result), _pixels(second))
    assert len(thumbnails) == 2
    mask, result, thumbnails, _ = actions.reset(tab)
    np.testing.assert_array_equal(_pixels(result), photo)
    assert mask is None and thumbnails == []


def test_tabs_share_nothing(example: str, new_session) -> None:
    tab_a = actions.open_photo(example, new_session)[0]
    tab_b = actions.open_photo(example, new_session)[0]
    _edit(tab_a, "red t-shirt")
    assert tab_a.session is not tab_b.session
    assert len(tab_a.session.history) == 1 and tab_b.session.history == []
    assert actions.view(tab_b)[2] == []


def test_an_unreadable_instruction_is_an_error_and_changes_nothing(example: str, new_session) -> None:
    tab = actions.open_photo(example, new_session)[0]
    with pytest.raises(gr.Error, match="qwerty"):
        _edit(tab, "qwerty zxcv")
    assert tab.session.history == [] and not tab.lock.locked()


def test_edit_needs_a_photo_and_an_instruction(example: str, new_session) -> None:
    with pytest.raises(gr.Error, match="photo first"):
        _edit(None, "red t-shirt")
    tab = actions.open_photo(example, new_session)[0]
    with pytest.raises(gr.Error, match="instruction first"):
        _edit(tab, "   ")


def test_nothing_to_undo_is_a_message(example: str, new_session) -> None:
    tab = actions.open_photo(example, new_session)[0]
    assert "nothing to undo" in actions.undo(tab)[3]
    assert "nothing to redo" in actions.redo(tab)[3]


def test_a_busy_tab_refuses_a_second_edit_and_history_moves(example: str, new_session) -> None:
    tab = actions.open_photo(example, new_session)[0]
    tab.lock.acquire()  # as while an edit runs
    try:
        with pytest.raises(gr.Error, match="running"):
            _edit(tab, "red t-shirt")
        with pytest.raises(gr.Error, match="running"):
            actions.undo(tab)
    finally:
        tab.lock.release()


def test_stop_ends_the_edit_and_keeps_the_session(example: str, pipe) -> None:
    tab = actions.open_photo(example, lambda photo, name: pipe.session(photo, iterations=50))[0]
    run = actions.run_edit(tab, "red t-shirt", 1, lambda *a, **k: None)
    next(run)  # the first preview: the optimisation is under way
    actions.stop_edit(tab)
    *_, (_, _, thumbnails, status) = list(run)
    assert thumbnails == [] and "stopped" in status
    tab.job.join(timeout=30)
    assert not tab.lock.locked()


def test_closing_the_page_generator_stops_the_worker(example: str, pipe) -> None:
    tab = actions.open_photo(example, lambda photo, name: pipe.session(photo, iterations=50))[0]
    run = actions.run_edit(tab, "red t-shirt", 1, lambda *a, **k: None)
    next(run)
    run.close()  # what gradio does when the tab closes or the event is cancelled
    tab.job.join(timeout=30)
    assert not tab.job._thread.is_alive() and not tab.lock.locked()
    assert tab.session.history == []


# ------------------------------------------------------------------------------------------------ pieces


def test_mask_view_keeps_the_region_and_dims_the_rest() -> None:
    photo = Image.new("RGB", (4, 2), (200, 100, 50))
    mask = Image.fromarray(np.array([[255, 255, 0, 0]] * 2, dtype=np.uint8))
    out = np.asarray(actions.mask_view(photo, mask))
    assert out[:, :2].tolist() == [[[200, 100, 50]] * 2] * 2  # repainted: the photo as it is
    assert out[:, 2:].tolist() == [[[60, 30, 15]] * 2] * 2  # kept: 30 % of the photo (MASK_DIMMING 0.7)


def test_user_text_is_shown_literally_in_markdown() -> None:
    assert actions._escape("*bold* [x](y) <b> t-shirt.") == r"\*bold\* \[x\](y) \<b\> t-shirt."


# ------------------------------------------------------------------------------------------------ the command


def test_main_without_gradio_says_how_to_install(monkeypatch, capsys) -> None:
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)  # main sets it; restored afterwards
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert main(["--port", "7860"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'ficekit[app]'" in err


def test_main_with_an_old_gradio_says_so(monkeypatch, capsys) -> None:
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)  # main sets it; restored afterwards
    monkeypatch.setattr(gr, "__version__", "4.44.1")
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "4.44.1" in err and "pip install -U 'ficekit[app]'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port"), (["--preview-every", "0"], "--preview-every"), (["--bundle", "no-such"], "no-such"),
        (["--iterations", "0"], "iterations"),
    ],
)
def test_main_refuses_bad_options_in_one_line(argv: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)  # main sets it; restored afterwards
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_main_silences_analytics_and_binds_localhost(monkeypatch, pipe) -> None:
    import ficekit.app.page
    from ficekit import FicePipeline

    served = {}
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    monkeypatch.setattr(FicePipeline, "from_bundle", classmethod(lambda cls, bundle, device: pipe))
    monkeypatch.setattr(ficekit.app.page, "serve", lambda page, **kw: served.update(kw, page=page))
    assert main(["--iterations", "3"]) == 0
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert served["host"] == "127.0.0.1" and served["port"] == 7860
    assert isinstance(served["page"], gr.Blocks)


def test_importing_the_app_changes_nothing() -> None:
    code = (
        "import os, sys; import ficekit.app, ficekit.app.__main__; "
        "print('gradio' in sys.modules, os.environ.get('GRADIO_ANALYTICS_ENABLED'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "None"], out.stderr
