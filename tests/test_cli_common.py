"""ficekit.cli.run_command: one line and exit 130 on Ctrl-C, and Ctrl-C still works afterwards in-process."""

from __future__ import annotations

import signal

import pytest

from ficekit.cli import EXIT_INTERRUPTED, run_command


def _interrupted_body() -> int:
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_the_handler_comes_back(capsys: pytest.CaptureFixture[str]) -> None:
    before = signal.getsignal(signal.SIGINT)
    assert run_command("ficekit.x", _interrupted_body, interrupted=lambda: "2 files kept") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "ficekit.x: interrupted; 2 files kept\n"
    assert signal.getsignal(signal.SIGINT) is before  # a notebook that called main() can still be interrupted


def test_the_handler_comes_back_even_when_reporting_fails() -> None:
    before = signal.getsignal(signal.SIGINT)

    def broken_report() -> str:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        run_command("ficekit.x", _interrupted_body, interrupted=broken_report)
    assert signal.getsignal(signal.SIGINT) is before
