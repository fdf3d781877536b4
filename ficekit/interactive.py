"""The prompt loop of `python -m ficekit.edit --interactive`: type instructions, see the files each round wrote.

Commands: undo, redo, reset, history, state, save [folder], help, quit (also Ctrl-D / Ctrl-C). Anything else is
an instruction for the garment ("red t-shirt", then "add white stripes"). Works with piped standard input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .cli import EXIT_OK
from .outputs import OutputWriter, describe_written, full_size

HELP = """commands:
  <instruction>   edit the garment, e.g. "red t-shirt", then "add white stripes", "long sleeves", "plain"
  undo / redo     take back the last round / restore it
  reset           back to the photo
  history         the rounds so far
  state           the garment as described now
  save [folder]   write every round and a report.json (default: the --out folder)
  help            this list
  quit            leave (also Ctrl-D)"""


def run_prompt(
    pipe: Any,
    photo: torch.Tensor,
    path: Path,
    out: Path,
    settings: Any,
    job: Any,
    force: bool = False,
    texts: Sequence[str] = (),
    read: Callable[[str], str] = input,
) -> int:
    """Run the loop on one photo until quit or end of input; `texts` are applied first (as typed)."""
    from .garment_state import InstructionNotUnderstood
    from .settings import settings_dict

    say = job.say
    session = pipe.session(photo, name=str(path), check_domain=not force, force=force, **settings_dict(settings))
    say(f"editing {path} with bundle {pipe.bundle.name!r}; type an instruction, or 'help'")
    writer = OutputWriter(out)
    pending = list(texts)
    while True:
        if pending:
            line = pending.pop(0)
        else:
            try:
                line = read("ficekit> ")
            except EOFError:
                say("")
                break
        line = line.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        command = command.lower()
        if command in ("quit", "exit", "q"):
            break
        if command == "help":
            say(HELP)
            continue
        if command == "history":
            for k, round_ in enumerate(session.history, start=1):
                say(f"  {k}. {round_.instruction!r} -> {round_.text!r} ({round_.seconds:.1f} s)")
            if not session.history:
                say("  (no rounds yet)")
            continue
        if command == "state":
            say(f"  {session.state if session.state is not None else '(nothing described yet)'}")
            continue
        if command == "save":
            target = Path(rest.strip()) if rest.strip() else out
            groups = session.save(target)
            for text in describe_written(groups):
                say(text)
            say(f"  saved {len(session.history)} round(s) and a report.json in {target}")
            continue
        try:
            round_ = session.apply(line, progress=False)
        except (InstructionNotUnderstood, ValueError) as e:
            print(f"  {e}", file=sys.stderr)
            continue
        if command in ("undo", "redo", "reset") and not rest:
            say(f"  now: {session.state if session.state is not None else 'the photo'}")
            continue
        k = len(session.history)
        generated, masks = full_size(round_.result, 0, session.photo)
        group = writer.photo(path.stem, session.photo, round_.result.images[0], masks, generated, f"_round{k}")
        group.name = f"round {k}: {round_.text!r} ({round_.seconds:.1f} s, {round_.change.message})"
        job.groups.append(group)
        for text in describe_written([group]):
            say(text)
    return EXIT_OK
