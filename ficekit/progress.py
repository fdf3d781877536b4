"""Progress bars that suit where they are shown: live in a terminal, and at most one line every few seconds
when stderr is a log file or a pipe (a 200-step edit would otherwise write 200 lines into a log)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_SECONDS = 10.0  # the shortest time between two updates when stderr is not a terminal


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm(*args, **kwargs), updating at most every LOG_INTERVAL_SECONDS when stderr is not a terminal."""
    stream = kwargs.get("file") or sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_SECONDS)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_SECONDS, kwargs["mininterval"]))
    return tqdm(*args, **kwargs)
