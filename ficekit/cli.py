"""What every ficekit command shares: exit codes, one-line errors, logging and Ctrl-C handling.

User errors (a bad option, an unreadable file, a photo outside the bundle's world) end in one line on stderr
and exit code 2; Ctrl-C ends in one line and exit code 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Callable

EXIT_OK = 0
EXIT_USAGE = 2  # a user error: bad option, unreadable input, refused photo
EXIT_PARTIAL = 1  # finished, but some inputs were skipped (listed)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix (reported in one line, never as a traceback)."""
    from .checkpoint_io import CheckpointError
    from .imageio import ImageReadError

    return (ImageReadError, CheckpointError, FileNotFoundError, FileExistsError, PermissionError, ValueError,
            KeyError, OSError)


def fail(prog: str, message: object) -> int:
    """Print `prog: error: message` on one line to stderr; return EXIT_USAGE."""
    text = " ".join(str(message).split())
    print(f"{prog}: error: {text}", file=sys.stderr)
    return EXIT_USAGE


def setup_logging(quiet: bool) -> None:
    """INFO messages on stderr (WARNING and up only when quiet); library warnings silenced when quiet."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", force=True)
    if quiet:
        warnings.filterwarnings("ignore", category=UserWarning)


def run_command(prog: str, body: Callable[[], int], interrupted: Callable[[], str] | None = None) -> int:
    """Run a command's body; user errors become one line and exit 2, Ctrl-C one line and exit 130.

    `interrupted` returns what was kept when Ctrl-C arrived (default: "nothing written").
    """
    try:
        return body()
    except KeyboardInterrupt:
        # A second Ctrl-C while we report must not add a traceback; the handler comes back afterwards, so a
        # Python session that called main() in-process can still be interrupted later.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            kept = interrupted() if interrupted is not None else "nothing written"
            print(f"{prog}: interrupted; {kept}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
        return EXIT_INTERRUPTED
    except user_errors() as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        return fail(prog, message)
