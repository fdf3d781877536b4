"""Fetch a released bundle: `python -m ficekit.download fice [--dest DIR] [--url URL] [--clip-url URL] [--force]`.

The 'fice' bundle is FICE's released checkpoint archive (the URL of FICE's download.sh: generator.pt,
e4e.pt, densepose.pkl, segmentator.pt) plus OpenAI's CLIP RN50x4 weights (the URL open_clip lists for
RN50x4 'openai'). Each download goes to a staging folder inside the destination (a '.part' file renamed
when complete) with a progress bar; its sha256 is computed on the way and checked where one is known
(OpenAI's URL names the file's sha256; --sha256 gives the archive's). The archive is extracted there,
refusing absolute paths, '..' and links; each expected file is found and, unless --no-verify, loaded with
its loader. Only then are the files moved into the destination and bundle.json written, with the sha256
of every file and the download's provenance. Nothing is downloaded except by this explicit command.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from ficekit.bundle import (
    BUNDLE_FILE,
    Bundle,
    EditDefaults,
    ModelSpec,
    ficekit_home,
    load_model,
    sha256_file,
    write_bundle,
)
from ficekit.checkpoint_io import CheckpointError
from ficekit.domain import DomainRecord, fice_domain_record

logger = logging.getLogger(__name__)

# FICE download.sh (MartinPernus/FICE): wget -O checkpoints.tar.xz <this>; tar -xf ... -C checkpoints
FICE_ARCHIVE_URL = "https://www.dropbox.com/s/qx9mag5hh7tleso/checkpoints.tar.xz?dl=1"
# open_clip pretrained.py, RN50x4 'openai' (quick_gelu=True); the folder name is the file's sha256.
CLIP_RN50X4_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt"
)
USER_AGENT = "ficekit-download/0.1"
STAGING_PREFIX = ".ficekit-download-"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip starts with a local file header (or is an empty zip)


class DownloadError(RuntimeError):
    """A download or its content failed (network, HTTP status, checksum, archive, unloadable file)."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the extraction folder, or is a link or device."""


@dataclass(frozen=True)
class Release:
    """What to fetch for a bundle and how to record it."""

    name: str  # Bundle name written to bundle.json.
    archive_url: str  # Archive (zip or tar, any compression) holding the model files.
    models: Mapping[str, ModelSpec]  # Role -> record; `file` is the file's name in the archive.
    clip_url: str | None  # CLIP weights file, downloaded as is; None = no separate CLIP download.
    clip: ModelSpec | None  # Record of the CLIP weights; `file` is the name it is saved under.
    defaults: EditDefaults = field(default_factory=EditDefaults)  # Default edit settings.
    archive_sha256: str | None = None  # Expected sha256 of the archive; None = record it only.
    clip_sha256: str | None = None  # Expected sha256 of the CLIP file; None = the one its URL names, if any.
    source: str = ""  # One line on where the weights come from (provenance).
    domain: DomainRecord | None = None  # The bundle's domain record (ficekit.domain); None = photos are not checked.


FICE_RELEASE = Release(
    name="fice",
    archive_url=FICE_ARCHIVE_URL,
    models={
        "generator": ModelSpec("generator.pt", "fice"),
        "encoder": ModelSpec("e4e.pt", "e4e"),
        "densepose": ModelSpec("densepose.pkl", "detectron2", {"config": "R_50_FPN_s1x"}),
        "segmenter": ModelSpec("segmentator.pt", "fice_deeplab"),
    },
    clip_url=CLIP_RN50X4_URL,
    # OpenAI's file is a TorchScript archive; trusting it is safe because its sha256 is OpenAI's published one.
    clip=ModelSpec("RN50x4.pt", "open_clip", {"model_name": "RN50x4", "quick_gelu": True, "trust_torchscript": True}),
    defaults=EditDefaults(),  # FICE: 500 iterations, lr 0.05, clip 1 / img 30 / shape 10 / head_shape 1 / w_delta 1
    source="FICE (Pernus et al., github.com/MartinPernus/FICE) released checkpoints + OpenAI CLIP RN50x4",
    # VITON-style upper-body photos; a rule (DensePose finds one person on a plausible share of the frame), since
    # no in-domain photos ship to calibrate on: `python -m ficekit.domain_calibrate --bundle fice --images DIR`.
    domain=fice_domain_record(),
)
RELEASES: dict[str, Release] = {"fice": FICE_RELEASE}


# ---------------------------------------------------------------------------------------------------
# Fetching.


def sha256_from_url(url: str) -> str | None:
    """The sha256 a URL names as its parent folder (OpenAI's CLIP URLs do, as open_clip relies on), or None."""
    parts = urllib.parse.urlsplit(url).path.split("/")
    return parts[-2].lower() if len(parts) >= 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[-2]) else None


def fetch(
    url: str,
    target: str | os.PathLike,
    expected_sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Download `url` to `target` (via target.part, renamed when complete) and return its sha256.

    Raises DownloadError with a one-line reason for an unsupported scheme, an HTTP error status, an
    unreachable host, a timeout, a truncated transfer or a sha256 different from `expected_sha256`.
    """
    target = Path(target)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"cannot download {url!r}: only http and https URLs are supported")
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            received = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"download of {url} stopped after {received} of {total} bytes; try again")
    except urllib.error.HTTPError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"cannot reach {urllib.parse.urlsplit(url).netloc} for {url}: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, truncated bodies
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed: {type(e).__name__}: {e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(f"sha256 mismatch for {url}: got {actual}, expected {expected_sha256.lower()}")
    os.replace(part, target)
    logger.info("downloaded %s (%d bytes, sha256 %s)", url, received, actual)
    return actual


# ---------------------------------------------------------------------------------------------------
# Extracting.


def _check_member_name(name: str, archive: Path) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside the extraction folder (absolute path or '..'); "
            "refusing to extract this archive"
        )


def extract_archive(archive: str | os.PathLike, into: str | os.PathLike) -> list[str]:
    """Extract a zip or tar (any compression, told by content) into `into`; returns the member names.

    Every member is checked before anything is written: absolute paths, '..' components, and (tar) links,
    devices or fifos raise UnsafeArchiveError. Other unreadable archives raise DownloadError.
    """
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    with open(archive, "rb") as f:
        head = f.read(4)
    # Told by the first bytes: zipfile.is_zipfile also accepts a tar whose last member is a zip (a torch file).
    if head in ZIP_MAGICS:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for name in names:
                _check_member_name(name, archive)
            zf.extractall(into)
        return names
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_member_name(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(
                        f"{archive}: member {member.name!r} is a link or special file; refusing to extract this archive"
                    )
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: a second line of defence
                tf.extractall(into, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; the checks above already ran
                tf.extractall(into, members=members)
        return [m.name for m in members]
    except tarfile.TarError as e:
        raise DownloadError(f"{archive} is neither a zip nor a readable tar archive ({e})") from e
    except (EOFError, OSError) as e:
        raise DownloadError(f"{archive} is truncated or corrupt ({type(e).__name__}: {e})") from e


def _find_member(folder: Path, name: str) -> Path | None:
    """`name` at the top of `folder`, else the one file of that name anywhere below it (None if 0 or > 1)."""
    if (folder / name).is_file():
        return folder / name
    found = [p for p in folder.rglob(name) if p.is_file()]
    return found[0] if len(found) == 1 else None


# ---------------------------------------------------------------------------------------------------
# The whole release.


def _release_files(release: Release) -> list[str]:
    files = [spec.file for spec in release.models.values() if spec.file is not None]
    if release.clip is not None and release.clip.file is not None:
        files.append(release.clip.file)
    return files


def download_release(
    release: Release,
    dest: str | os.PathLike,
    force: bool = False,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Bundle:
    """Download, check and install `release` as a bundle in `dest`; returns the bundle.

    Args:
        release: what to fetch (FICE_RELEASE for 'fice').
        dest: the bundle folder (created if needed).
        force: replace the files of an earlier download in `dest` (bundle.json and the model files);
            without it, any of them existing raises FileExistsError and nothing is touched.
        verify: load every model of the archive with its loader before installing it.
        progress: show tqdm progress bars.
        timeout: seconds without data before a download fails.
    Raises:
        DownloadError: network failure, HTTP error, checksum mismatch, unsafe or incomplete archive, or a
            file that does not load. `dest` is left as it was.
    """
    dest = Path(dest).expanduser()
    ours = [BUNDLE_FILE, *_release_files(release)]
    present = [name for name in ours if (dest / name).exists()]
    if present and not force:
        raise FileExistsError(
            f"{dest} already holds {present}; pass force=True (--force) to download again and replace them"
        )
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    installed = False
    try:
        archive_sha = fetch(release.archive_url, staging / "archive", release.archive_sha256, progress, timeout)
        extracted = staging / "extracted"
        members = extract_archive(staging / "archive", extracted)
        staged: dict[str, Path] = {}
        for role, spec in release.models.items():
            found = _find_member(extracted, spec.file)
            if found is None:
                raise DownloadError(
                    f"the archive from {release.archive_url} has no single {spec.file!r} (the {role} model); "
                    f"it holds {sorted(members)[:20]}"
                )
            staged[role] = found
        if verify:
            for role, spec in release.models.items():
                logger.info("checking that %s loads as the %s (%s)", spec.file, role, spec.format)
                try:
                    load_model(role, dataclasses.replace(spec, file=str(staged[role])), staging)
                except Exception as e:  # noqa: BLE001 - any failure to load means a bad file; say which
                    reason = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
                    raise DownloadError(
                        f"{spec.file} from the archive does not load as the {role} model: {reason}"
                    ) from e
        clip_sha = None
        if release.clip is not None and release.clip_url is not None:
            expected = release.clip_sha256 or sha256_from_url(release.clip_url)
            staged["clip"] = staging / release.clip.file
            clip_sha = fetch(release.clip_url, staged["clip"], expected, progress, timeout)

        specs = {
            role: dataclasses.replace(spec, sha256=sha256_file(staged[role])) for role, spec in release.models.items()
        }
        if "clip" in staged:
            specs["clip"] = dataclasses.replace(release.clip, sha256=clip_sha)
        provenance = {
            "source": release.source,
            "archive_url": release.archive_url,
            "archive_sha256": archive_sha,
            "archive_members": sorted(members),
            "clip_url": release.clip_url,
            "clip_sha256": clip_sha,
            "downloaded_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "created_by": "ficekit.download",
        }
        # Install: first drop an old bundle.json, so a crash below leaves "no bundle" rather than a mismatched one.
        (dest / BUNDLE_FILE).unlink(missing_ok=True)
        for role, path in staged.items():
            (dest / specs[role].file).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest / specs[role].file)
        bundle = write_bundle(dest, specs, release.defaults, provenance, name=release.name, domain=release.domain)
        installed = True
        return bundle
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not installed and not any(dest.iterdir()):
            dest.rmdir()  # leave no empty folder behind a failed first download


# ---------------------------------------------------------------------------------------------------
# Command line.


def dest_problem(dest: Path) -> str | None:
    """Why a bundle cannot be installed in `dest` (a file, under a file, not writable), or None if it can."""
    if dest.exists() and not dest.is_dir():
        return "is a file, not a folder"
    ancestor = dest
    while not ancestor.exists() and ancestor != ancestor.parent:  # the folder that will hold the new ones
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot write into {ancestor} (permission denied)"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ficekit.download",
        description="Download a released model bundle (explicitly; nothing else in ficekit downloads).",
        epilog=(
            "Examples:\n"
            "  python -m ficekit.download fice\n"
            "  python -m ficekit.download fice --dest ./checkpoints/fice\n"
            "  python -m ficekit.download fice --url https://mirror.example/checkpoints.tar.xz --sha256 <hex>"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle", choices=sorted(RELEASES), help="which bundle to fetch")
    parser.add_argument("--dest", type=Path, default=None, help="bundle folder (default: $FICEKIT_HOME/<bundle>, "
                        f"FICEKIT_HOME defaulting to ~/.cache/ficekit; now {ficekit_home()})")  # fmt: skip
    parser.add_argument("--url", default=None, help="archive URL (default: the one in FICE's download.sh)")
    parser.add_argument("--sha256", default=None, help="expected sha256 of the archive (default: record only)")
    parser.add_argument("--clip-url", default=None, help="CLIP weights URL (default: open_clip's RN50x4 'openai')")
    parser.add_argument("--force", action="store_true", help="download again, replacing an earlier download")
    parser.add_argument("--no-verify", action="store_true", help="skip loading each model after extraction")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without data before giving up (default: 60)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages (errors only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (0 done or already there, 1 refused, 2 download failed)."""
    args = _parser().parse_args(argv)
    release = RELEASES[args.bundle]
    overrides: dict[str, Any] = {}
    if args.url is not None:
        overrides.update(archive_url=args.url, archive_sha256=None)
    if args.sha256 is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
            print(f"error: --sha256 must be 64 hex digits, got {args.sha256!r}", file=sys.stderr)
            return 1
        overrides["archive_sha256"] = args.sha256.lower()
    if args.clip_url is not None:
        overrides.update(clip_url=args.clip_url, clip_sha256=None)
    release = dataclasses.replace(release, **overrides)
    dest = args.dest if args.dest is not None else ficekit_home() / args.bundle
    where = f"--dest {dest}" if args.dest is not None else f"the bundle folder {dest} (default --dest)"
    problem = dest_problem(dest)
    if problem is not None:
        print(f"error: {where}: {problem}", file=sys.stderr)
        return 2
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    if (dest / BUNDLE_FILE).is_file() and not args.force:
        say(f"the {args.bundle} bundle is already at {dest}; nothing to do (--force downloads it again)")
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        bundle = download_release(
            release, dest, force=args.force, verify=not args.no_verify, progress=not args.quiet, timeout=args.timeout
        )
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the folder could not be written after all: full disk, permissions, a race
        print(f"error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was installed", file=sys.stderr)
        return 130
    handle = args.bundle if args.dest is None else str(bundle.root)
    say(f"the {bundle.name} bundle is ready at {bundle.root} (ficekit.bundle.load_bundle({handle!r}))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
