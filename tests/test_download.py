"""The download command against a loopback HTTP server: archives of random FICE-format models, sha256
records, unsafe archives, HTTP and network errors. Sockets may only reach the loopback address."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ficekit.bundle import BUNDLE_FILE, Bundle, EditDefaults, load_bundle
from ficekit.checkpoint_io import CheckpointError
from ficekit.download import (
    FICE_RELEASE,
    STAGING_PREFIX,
    DownloadError,
    Release,
    UnsafeArchiveError,
    download_release,
    extract_archive,
    fetch,
    main,
    sha256_from_url,
)
from ficekit.random_bundle import write_random_bundle

FICE_FILES = {
    "generator": "generator.pt",
    "encoder": "e4e.pt",
    "densepose": "densepose.pkl",
    "segmenter": "segmentator.pt",
}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection to anything but 127.0.0.1 / ::1; no proxies."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect to {address}; only loopback is allowed")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """(folder served, base URL) of an HTTP server on 127.0.0.1 at a free port, in a thread."""
    root = tmp_path_factory.mktemp("www")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tar(path: Path, files: dict[str, bytes | Path], mode: str = "w:xz") -> Path:
    kwargs = {"preset": 0} if mode == "w:xz" else {}
    with tarfile.open(path, mode, **kwargs) as tf:
        for name, content in files.items():
            if isinstance(content, Path):
                tf.add(content, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Random 'tiny' models, already under FICE's file names."""
    bundle = write_random_bundle(tmp_path_factory.mktemp("source") / "tiny", "tiny", seed=1)
    assert {role: bundle.models[role].file for role in FICE_FILES} == FICE_FILES
    return bundle


@pytest.fixture(scope="module")
def served(source: Bundle, server: tuple[Path, str]) -> dict[str, str]:
    """URLs of the archives and CLIP files the tests download."""
    root, base = server
    models = {name: source.path(role) for role, name in FICE_FILES.items()}
    _tar(root / "checkpoints.tar.xz", models)  # FICE's layout: the files at the top of a .tar.xz
    with zipfile.ZipFile(root / "nested.zip", "w") as zf:  # the same files one folder down, zipped
        for name, path in models.items():
            zf.write(path, f"checkpoints/{name}")
    _tar(root / "no_segmenter.tar", {k: v for k, v in models.items() if k != "segmentator.pt"}, "w")
    truncated = models["generator.pt"].read_bytes()[:50_000]
    _tar(root / "bad_generator.tar", {**models, "generator.pt": truncated}, "w")
    _tar(root / "unsafe.tar", {**models, "../escaped.txt": b"outside"}, "w")
    clip = source.path("clip")
    clip_sha = _sha(clip)
    for folder in (clip_sha, "0" * 64):  # OpenAI's URL layout: the folder is the file's sha256
        (root / folder).mkdir()
        (root / folder / "RN50x4.pt").write_bytes(clip.read_bytes())
    return {
        "archive": f"{base}/checkpoints.tar.xz",
        "nested": f"{base}/nested.zip",
        "no_segmenter": f"{base}/no_segmenter.tar",
        "bad_generator": f"{base}/bad_generator.tar",
        "unsafe": f"{base}/unsafe.tar",
        "missing": f"{base}/missing.tar.xz",
        "clip": f"{base}/{clip_sha}/RN50x4.pt",
        "clip_wrong_sha": f"{base}/{'0' * 64}/RN50x4.pt",
        "archive_sha": _sha(root / "checkpoints.tar.xz"),
        "clip_sha": clip_sha,
    }


@pytest.fixture(scope="module")
def release(source: Bundle, served: dict[str, str]) -> Release:
    """FICE's release with the tiny models' records (their densepose config, segmenter architecture, CLIP)."""
    return dataclasses.replace(
        FICE_RELEASE,
        archive_url=served["archive"],
        models={role: dataclasses.replace(source.models[role], sha256=None) for role in FICE_FILES},
        clip_url=served["clip"],
        clip=dataclasses.replace(source.models["clip"], file="RN50x4.pt", sha256=None),
        source="test",
    )


def _staging_left(dest: Path) -> list[Path]:
    return list(dest.glob(f"{STAGING_PREFIX}*")) if dest.exists() else []


# ---------------------------------------------------------------------------------------------------


def test_download_release_installs_a_verified_bundle(release: Release, source: Bundle, served, tmp_path: Path) -> None:
    dest = tmp_path / "fice"
    bundle = download_release(release, dest, progress=False, timeout=10)
    assert bundle == load_bundle(dest) and bundle.name == "fice"
    assert bundle.defaults == EditDefaults()  # FICE's recipe
    assert sorted(p.name for p in dest.iterdir()) == sorted([BUNDLE_FILE, "RN50x4.pt", *FICE_FILES.values()])
    for role in FICE_FILES:
        assert bundle.models[role].sha256 == _sha(source.path(role)), role
    assert bundle.models["clip"].sha256 == served["clip_sha"] == bundle.provenance["clip_sha256"]
    assert bundle.provenance["archive_sha256"] == served["archive_sha"]
    assert bundle.provenance["archive_url"] == served["archive"]
    assert sorted(bundle.provenance["archive_members"]) == sorted(FICE_FILES.values())
    G, G_source = bundle.load("generator"), source.load("generator")
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G_source.state_dict().values(), strict=True))
    for role in ("encoder", "densepose", "segmenter", "clip"):
        bundle.load(role)  # sha256 verified, then loaded

    with pytest.raises(FileExistsError, match="already holds"):
        download_release(release, dest, progress=False)
    again = download_release(
        dataclasses.replace(release, archive_url=served["nested"]), dest, force=True, progress=False
    )
    assert again.models == bundle.models  # same files from a zip with a top folder
    assert not _staging_left(dest)


def test_cli_writes_the_fice_bundle(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("FICEKIT_HOME", str(tmp_path / "home"))
    args = ["fice", "--url", served["archive"], "--clip-url", served["clip"], "--no-verify", "--quiet"]
    assert main(args) == 0
    bundle = load_bundle("fice")
    assert bundle.root == (tmp_path / "home" / "fice").resolve()
    assert bundle.models["densepose"].kwargs == {"config": "R_50_FPN_s1x"}  # FICE's records, not the test's
    assert bundle.models["clip"].kwargs == {"model_name": "RN50x4", "quick_gelu": True, "trust_torchscript": True}
    assert (bundle.defaults.iterations, bundle.defaults.lr, bundle.defaults.mask, bundle.defaults.stitch) == (
        500, 0.05, "fice", "fice",
    )  # fmt: skip
    assert bundle.defaults.weights == {"clip": 1.0, "img": 30.0, "shape": 10.0, "head_shape": 1.0, "w_delta": 1.0}
    assert bundle.load("generator").img_resolution == 32  # the architecture came with the file
    from ficekit.domain import fice_domain_record

    assert bundle.domain == fice_domain_record()  # VITON-style photos: DensePose must find one person
    with pytest.raises(CheckpointError):  # tiny DensePose weights do not fit FICE's R_50_FPN_s1x record
        bundle.load("densepose")

    stamp = (bundle.root / "generator.pt").stat().st_ino
    capsys.readouterr()
    assert main(args[:-1]) == 0  # already there: nothing downloaded
    assert "already" in capsys.readouterr().err
    assert (bundle.root / "generator.pt").stat().st_ino == stamp
    assert main([*args, "--force"]) == 0
    assert (bundle.root / "generator.pt").stat().st_ino != stamp  # a new file was moved in


def test_http_404_is_a_clear_error(served, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "dest"
    code = main(["fice", "--dest", str(dest), "--url", served["missing"], "--clip-url", served["clip"], "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "HTTP 404" in err and served["missing"] in err and "Traceback" not in err
    assert not dest.exists()  # nothing left behind


def test_unreachable_host_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/checkpoints.tar.xz"
    assert main(["fice", "--dest", str(tmp_path / "d"), "--url", url, "--quiet", "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach 127.0.0.1:{port}" in err and "Traceback" not in err
    with pytest.raises(DownloadError, match="only http and https"):
        fetch("file:///etc/passwd", tmp_path / "x")


def test_sha256_checks(release: Release, served, tmp_path: Path, capsys) -> None:
    with pytest.raises(DownloadError, match=f"sha256 mismatch .* got {served['clip_sha']}, expected {'0' * 64}"):
        download_release(
            dataclasses.replace(release, clip_url=served["clip_wrong_sha"]), tmp_path / "a", progress=False
        )
    assert not (tmp_path / "a").exists()
    args = ["fice", "--dest", str(tmp_path / "b"), "--url", served["archive"], "--clip-url", served["clip"], "--quiet"]
    assert main([*args, "--sha256", "f" * 64]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert main([*args, "--sha256", "xyz"]) == 1
    assert sha256_from_url(FICE_RELEASE.clip_url) == "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"
    assert sha256_from_url(served["archive"]) is None


def test_archive_without_a_model(release: Release, served, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"no single 'segmentator.pt' \(the segmenter model\)"):
        download_release(
            dataclasses.replace(release, archive_url=served["no_segmenter"]), tmp_path / "d", progress=False
        )


def test_unloadable_file_is_caught_unless_no_verify(release: Release, served, tmp_path: Path) -> None:
    bad = dataclasses.replace(release, archive_url=served["bad_generator"])
    with pytest.raises(DownloadError, match="generator.pt from the archive does not load as the generator model"):
        download_release(bad, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()
    bundle = download_release(bad, tmp_path / "d", verify=False, progress=False)
    with pytest.raises(CheckpointError, match="generator.pt"):
        bundle.load("generator")


def test_earlier_files_are_not_replaced_without_force(served, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "generator.pt").write_bytes(b"mine")
    args = ["fice", "--dest", str(dest), "--url", served["archive"], "--clip-url", served["clip"], "--quiet"]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert (dest / "generator.pt").read_bytes() == b"mine"


# ---------------------------------------------------------------------------------------------------
# Archive safety.


def test_unsafe_archive_over_http_installs_nothing(release: Release, served, tmp_path: Path) -> None:
    dest = tmp_path / "d"
    with pytest.raises(UnsafeArchiveError, match=r"'../escaped.txt'"):
        download_release(dataclasses.replace(release, archive_url=served["unsafe"]), dest, progress=False)
    assert not dest.exists() and not (tmp_path / "escaped.txt").exists()


def _symlink_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    return path


@pytest.mark.parametrize(
    ("build", "member"),
    [
        (lambda p: _tar(p, {"ok.txt": b"1", "../up.txt": b"2"}, "w"), "../up.txt"),
        (lambda p: _tar(p, {"a/../../up.txt": b"2"}, "w:gz"), "a/../../up.txt"),
        (lambda p: _tar(p, {"/tmp/absolute.txt": b"3"}, "w"), "/tmp/absolute.txt"),
        (_symlink_tar, "link"),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, build, member: str) -> None:
    archive = build(tmp_path / "a.tar")
    into = tmp_path / "deep" / "into"
    with pytest.raises(UnsafeArchiveError, match=f"member {member!r}"):
        extract_archive(archive, into)
    assert not any(into.iterdir())  # checked before anything was written
    assert not (tmp_path / "deep" / "up.txt").exists() and not (tmp_path / "up.txt").exists()


def test_unsafe_zip_members_are_refused(tmp_path: Path) -> None:
    for name in ("../up.txt", "/abs.txt", "C:/windows.txt"):
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("fine.txt", "1")
            zf.writestr(zipfile.ZipInfo(name), "2")
        with pytest.raises(UnsafeArchiveError):
            extract_archive(archive, tmp_path / "into")
        assert not (tmp_path / "into" / "fine.txt").exists() and not (tmp_path / "up.txt").exists()


def test_extract_safe_archives(tmp_path: Path) -> None:
    tar = _tar(tmp_path / "a.tar.gz", {"x/y.txt": b"y", "z.txt": b"z"}, "w:gz")
    assert sorted(extract_archive(tar, tmp_path / "t")) == ["x/y.txt", "z.txt"]
    assert (tmp_path / "t" / "x" / "y.txt").read_bytes() == b"y"
    inner = tmp_path / "inner.zip"  # an uncompressed tar ending in a zip file (as a torch checkpoint is) is a tar
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("archive/data.pkl", "x")
    tar = _tar(tmp_path / "b.tar", {"model.pt": inner}, "w")
    assert zipfile.is_zipfile(tar) and extract_archive(tar, tmp_path / "b") == ["model.pt"]
    (tmp_path / "junk.bin").write_bytes(b"neither zip nor tar")
    with pytest.raises(DownloadError, match="neither a zip nor"):
        extract_archive(tmp_path / "junk.bin", tmp_path / "j")


def test_dest_that_is_a_file_exits_2_naming_the_option(tmp_path: Path, capsys) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    for dest, problem in ((existing, "is a file, not a folder"), (existing / "fice", f"{existing} is a file")):
        assert main(["fice", "--dest", str(dest), "--url", "http://127.0.0.1:9/x.tar", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --dest {dest}: {problem}") and err.count("\n") == 1
    assert existing.read_text() == "keep me"
