"""The jobs of a dataset evaluation: which photo is edited with which instruction, and the file names of the outputs.

python -m ficekit.eval.run edits every job with every method. Its --texts file is either a list of
instructions, one per line (blank lines and '#' comments skipped), each applied to every image in --images,
or a CSV whose header has columns image,text listing the pairs (image relative to --images). A job's outputs
are named <image-stem>__<text-slug>.png; two images or two instructions that would share a name are refused
up front rather than overwriting each other's results hours into a run.

EvalError, the runner's user-facing error (exit code 2 on the command line), lives here because the inputs are
where most of them arise; the method, results and report modules raise it too.
"""

from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ficekit.imageio import ImageReadError, list_images

__all__ = ["EvalError", "Job", "image_stem", "text_slug", "read_jobs", "jobs_for_texts"]

SLUG_LENGTH = 80  # longest text slug in file names


class EvalError(ValueError):
    """A user-facing problem with the evaluation's inputs or output folder (exit code 2 on the command line)."""


@dataclass(frozen=True, order=True)
class Job:
    """One photo and one instruction (image: its POSIX path relative to the images folder)."""

    image: str
    text: str

    @property
    def name(self) -> str:
        """File name stem of this job's outputs: <image-stem>__<text-slug>."""
        return f"{image_stem(self.image)}__{text_slug(self.text)}"


def image_stem(image: str) -> str:
    """The image's relative path without its suffix, folders joined by '-' ('shoots/a.jpg' -> 'shoots-a')."""
    return PurePosixPath(image).with_suffix("").as_posix().replace("/", "-")


def text_slug(text: str) -> str:
    """A file-name-safe form of an instruction: ASCII lower case, runs of other characters as '-' (max 80)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:SLUG_LENGTH].rstrip("-") or "text"


PAIR_COLUMNS = ("image", "text")


def _csv_header(line: str, path: Path) -> list[str] | None:
    """The lower-cased column names if `line` heads a CSV of pairs, else None (an instruction line).

    A header is a comma-separated first line naming an 'image' or 'text' column, or any first line of a .csv
    file; an instruction such as "red, with long sleeves" names neither and stays an instruction.
    """
    fields = [f.strip().lower() for f in next(csv.reader([line]), [])]
    if path.suffix.lower() == ".csv" or (len(fields) >= 2 and set(PAIR_COLUMNS) & set(fields)):
        return fields
    return None


def _check_header(fields: list[str], path: Path) -> None:
    missing = [c for c in PAIR_COLUMNS if c not in fields]
    if missing:
        raise EvalError(
            f"--texts: CSV header has {','.join(fields)}; expected columns {','.join(PAIR_COLUMNS)} ({path} lacks "
            f"{', '.join(missing)})"
        )


def _relative_image(root: Path, value: str, where: str) -> str:
    rel = PurePosixPath(value.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise EvalError(f"{where}: image {value!r} must be a path inside --images ({root}), without '..'")
    if not (root / rel).is_file():
        raise ImageReadError(f"{where}: image not found: {root / rel}")
    return rel.as_posix()


def _read_pairs(root: Path, path: Path, text: str) -> list[Job]:
    reader = csv.reader(io.StringIO(text))
    header = next(row for row in reader if any(cell.strip() for cell in row))
    header = [h.strip().lower() for h in header]
    i_image, i_text = header.index("image"), header.index("text")
    jobs = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {reader.line_num}"
        if len(row) <= max(i_image, i_text) or not row[i_image].strip() or not row[i_text].strip():
            raise EvalError(f"{where}: expected an image and a text, got {row}")
        jobs.append(Job(_relative_image(root, row[i_image].strip(), where), row[i_text].strip()))
    return jobs


def _check_names(jobs: Sequence[Job]) -> None:
    """Two images (or texts) whose outputs would share a file name are refused rather than overwritten."""
    for kind, values, name_of in (
        ("images", {j.image for j in jobs}, image_stem),
        ("instructions", {j.text for j in jobs}, text_slug),
    ):
        seen: dict[str, str] = {}
        for value in sorted(values):
            other = seen.setdefault(name_of(value), value)
            if other != value:
                raise EvalError(
                    f"{kind} {other!r} and {value!r} would share the output name {name_of(value)!r}; rename one"
                )


def read_jobs(images_dir: str | os.PathLike, texts_file: str | os.PathLike) -> list[Job]:
    """The sorted, deduplicated jobs of a texts file: every image x every instruction line, or the pairs of
    a CSV with header image,text. Raises ImageReadError / EvalError / FileNotFoundError naming the problem."""
    root = Path(images_dir)
    if not root.is_dir():
        raise ImageReadError(f"--images folder not found: {root}")
    path = Path(texts_file)
    if not path.is_file():
        raise FileNotFoundError(f"texts file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not text
    except UnicodeDecodeError as e:
        raise EvalError(f"texts file {path} is not UTF-8 text ({e})") from e
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line), None)
    if first is None:
        raise EvalError(f"texts file {path} is empty: write one instruction per line, or a CSV image,text")
    header = _csv_header(first, path)
    if header is not None:
        _check_header(header, path)
        jobs = _read_pairs(root, path, text)
        if not jobs:
            raise EvalError(f"texts file {path} has a header but no image,text rows")
    else:
        instructions = [line for line in lines if line and not line.startswith("#")]
        if not instructions:
            raise EvalError(f"texts file {path} holds no instruction (only comments)")
        images = [p.relative_to(root).as_posix() for p in list_images(root)]
        jobs = [Job(image, t) for image in images for t in instructions]
    jobs = sorted(set(jobs))
    _check_names(jobs)
    return jobs


def jobs_for_texts(images_dir: str | os.PathLike, texts: Sequence[str]) -> list[Job]:
    """read_jobs for instructions given as a list rather than a file: every image x every instruction."""
    root = Path(images_dir)
    if not root.is_dir():
        raise ImageReadError(f"--images folder not found: {root}")
    instructions = [t.strip() for t in texts if t.strip()]
    if not instructions:
        raise EvalError("no instructions given")
    jobs = sorted({Job(p.relative_to(root).as_posix(), t) for p in list_images(root) for t in instructions})
    _check_names(jobs)
    return jobs
