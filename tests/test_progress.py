"""Progress bars write a line every few seconds into a log, not one per step."""

import io

from ficekit.progress import LOG_INTERVAL_SECONDS, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_few_updates_not_one_per_step():
    log = io.StringIO()
    for _ in progress_bar(range(200), desc="optimising W+", file=log):
        pass
    updates = log.getvalue().count("\r") + log.getvalue().count("\n")
    assert updates <= 4, log.getvalue()  # start, end (and nothing in between: 200 fast steps < 10 s)
    assert "200/200" in log.getvalue()


def test_a_terminal_keeps_a_live_bar():
    terminal = _Terminal()
    bar = progress_bar(range(3), file=terminal)
    assert bar.mininterval < LOG_INTERVAL_SECONDS
    list(bar)
