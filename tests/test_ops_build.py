"""Building the CUDA extension: a real build (marked nvcc), the build cache, the stale-lock check,
the warn-once fallback and the `python -m stylegan2_ops build` command.

The real build compiles once per test session (about a minute on 2 cores, TORCH_CUDA_ARCH_LIST=9.0).
A machine without a GPU can build and import the extension, though not run it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from stylegan2_ops import _build

REPO = Path(__file__).resolve().parents[1]


def _toolchain_or_skip() -> None:
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        pytest.skip("this torch is built without CUDA")
    if not cpp_extension.is_ninja_available():
        pytest.skip("ninja is not installed")
    try:
        _build._cuda_home(cpp_extension.CUDA_HOME)
    except _build.BuildError as e:
        pytest.skip(f"no nvcc: {e}")


@pytest.fixture(autouse=True)
def fresh_build_state() -> Iterator[None]:
    """Each test starts and ends with no cached build result."""
    _build.reset()
    yield
    _build.reset()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, _build.BuildPlan]:
    """One real build of the sources, into a temporary extensions folder, for 9.0 only."""
    _toolchain_or_skip()
    root = tmp_path_factory.mktemp("torch_extensions")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
        plan = _build.plan_build(build_root=root)
        module = _build.build(plan=plan)
    return module, plan


# ------------------------------------------------------------------------------------------------
# The real build.


@pytest.mark.nvcc
def test_build_loads_both_ops(built: tuple[ModuleType, _build.BuildPlan]) -> None:
    module, plan = built
    so = Path(module.__file__)
    assert so.suffix == ".so" and so.parent == plan.build_dir and so.is_file()
    assert plan.arch_list == "9.0" and plan.name.startswith("stylegan2_ops_")
    for name in _build.EXPECTED_FUNCTIONS:
        assert callable(getattr(module, name))
    # The binding runs: its argument checks answer before any kernel would.
    empty = torch.empty(0)
    with pytest.raises(RuntimeError, match="x must be a CUDA tensor"):
        module.bias_act(torch.zeros(3), empty, empty, empty, empty, 0, 0, 1, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="x must be a CUDA tensor"):
        module.upfirdn2d(torch.zeros(1, 1, 2, 2), torch.ones(1, 1), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)


@pytest.mark.nvcc
def test_second_build_reuses_library(built: tuple[ModuleType, _build.BuildPlan]) -> None:
    module, plan = built
    so = Path(module.__file__)
    stamp = so.stat().st_mtime_ns
    again = _build.build(plan=plan)
    assert Path(again.__file__) == so and so.stat().st_mtime_ns == stamp  # not relinked


@pytest.mark.nvcc
def test_cli_build_prints_library(built: tuple[ModuleType, _build.BuildPlan]) -> None:
    module, plan = built
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(plan.build_dir.parent), TORCH_CUDA_ARCH_LIST="9.0")
    proc = subprocess.run(
        [sys.executable, "-m", "stylegan2_ops", "build"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert module.__file__ in proc.stdout and plan.name in proc.stdout


@pytest.mark.nvcc
def test_broken_sources_fail_once_and_warn_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real compiler failure: remembered, not retried, one warning under 'auto', errors under 'cuda'."""
    _toolchain_or_skip()
    broken = tmp_path / "csrc"
    shutil.copytree(_build.CSRC_DIR, broken)
    for name in _build.SOURCES:  # a missing header stops each compiler at once
        path = broken / name
        path.write_text('#include "deliberately_missing_header.h"\n' + path.read_text())
    calls = []
    real_build = functools.partial(_build.build, source_dir=broken, build_root=tmp_path / "ext")

    def counting_build(*args: object, **kwargs: object) -> ModuleType:
        calls.append(1)
        return real_build()

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setattr(_build, "build", counting_build)
    with pytest.warns(RuntimeWarning, match="deliberately_missing_header") as record:
        assert _build.get_extension(strict=False) is None
    assert len(record) == 1 and "reference implementation" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        assert _build.get_extension(strict=False) is None
    with pytest.raises(_build.BuildError, match="deliberately_missing_header"):
        _build.get_extension(strict=True)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------------
# Caching and fallback logic (no compiler needed).


def test_failed_build_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing_build(*args: object, **kwargs: object) -> ModuleType:
        calls.append(1)
        raise _build.BuildError("simulated compiler failure")

    monkeypatch.setattr(_build, "build", failing_build)
    with pytest.raises(_build.BuildError, match="simulated compiler failure"):
        _build.get_extension(strict=True)  # impl='cuda' first: raises, does not warn
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        assert _build.get_extension(strict=False) is None  # then the first 'auto' fallback warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build.get_extension(strict=False) is None
    with pytest.raises(_build.BuildError, match="simulated compiler failure"):
        _build.get_extension(strict=True)
    assert len(calls) == 1


def test_successful_build_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ModuleType("fake_extension")
    calls = []
    monkeypatch.setattr(_build, "build", lambda *a, **k: calls.append(1) or fake)
    assert _build.get_extension(strict=False) is fake
    assert _build.get_extension(strict=True) is fake
    assert len(calls) == 1


def test_cli_reports_failure_without_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, CUDA_HOME=str(tmp_path / "no_toolkit_here"), TORCH_EXTENSIONS_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "stylegan2_ops", "build"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "no CUDA toolkit" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cuda_home_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def toolkit(folder: Path, cudart: bool) -> str:
        (folder / "bin").mkdir(parents=True)
        (folder / "bin" / "nvcc").write_text("")
        if cudart:
            (folder / "lib64").mkdir()
            (folder / "lib64" / "libcudart.so").write_text("")
        return str(folder)

    wrapper_home = toolkit(tmp_path / "wrapper", cudart=False)  # what torch guesses from a wrapper script
    full_home = toolkit(tmp_path / "cuda", cudart=True)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(_build, "FALLBACK_CUDA_HOME", full_home)
    assert _build._cuda_home(wrapper_home) == full_home
    assert _build._cuda_home(None) == full_home
    other_full = toolkit(tmp_path / "other", cudart=True)
    assert _build._cuda_home(other_full) == other_full  # a good guess is kept
    monkeypatch.setenv("CUDA_HOME", wrapper_home)
    assert _build._cuda_home(other_full) == wrapper_home  # an explicit CUDA_HOME wins
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    with pytest.raises(_build.BuildError, match="no CUDA toolkit"):
        _build._cuda_home(other_full)


def test_arch_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6;9.0")
    assert _build._arch_list() == "8.6;9.0"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _build._arch_list() == "9.0+PTX"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: [(9, 0), (8, 6)][i])
    assert _build._arch_list() == "8.6;9.0"


def test_build_folder_follows_sources_and_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "_cuda_home", lambda guess: "/toolkit")
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "root"))
    copy = tmp_path / "csrc"
    shutil.copytree(_build.CSRC_DIR, copy)
    a = _build.plan_build(copy)
    assert a.build_dir.parent == tmp_path / "root" and a == _build.plan_build(copy)
    (copy / "upfirdn2d_kernel.cuh").write_text((copy / "upfirdn2d_kernel.cuh").read_text() + "\n// edited\n")
    b = _build.plan_build(copy)
    assert b.name != a.name  # a header edit rebuilds
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    c = _build.plan_build(copy)
    assert c.name not in (a.name, b.name) and c.arch_list == "8.6"
    (copy / "ops.h").unlink()
    with pytest.raises(_build.BuildError, match="ops.h"):
        _build.plan_build(copy)


def test_build_environment_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils import cpp_extension

    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5")
    before = cpp_extension.CUDA_HOME
    plan = _build.BuildPlan("n", Path("/b"), (), "9.0", "/toolkit")
    with _build._build_environment(cpp_extension, plan):
        assert os.environ["CUDA_HOME"] == "/toolkit" and os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0"
        assert cpp_extension.CUDA_HOME == "/toolkit"
    assert "CUDA_HOME" not in os.environ and os.environ["TORCH_CUDA_ARCH_LIST"] == "7.5"
    assert cpp_extension.CUDA_HOME == before


# ------------------------------------------------------------------------------------------------
# Stale build locks.


def test_old_lock_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's FileBaton waits forever on a lock file left by a killed build; we say so instead."""
    monkeypatch.setattr(_build, "torch_uses_advisory_lock", lambda: False)
    lock = tmp_path / "lock"
    lock.write_text("")
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    start = time.monotonic()
    with pytest.raises(_build.StaleLockError) as info:
        _build.wait_for_build_lock(tmp_path, timeout=600)
    assert time.monotonic() - start < 5  # reported at once, not after the timeout
    message = str(info.value)
    assert str(lock) in message and "delete it" in message and _build.LOCK_TIMEOUT_ENV in message


def test_lock_that_outlives_the_timeout_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "torch_uses_advisory_lock", lambda: False)
    (tmp_path / "lock").write_text("")
    monkeypatch.setenv(_build.LOCK_TIMEOUT_ENV, "0.3")
    with pytest.raises(_build.StaleLockError, match="lock"):
        _build.wait_for_build_lock(tmp_path, poll_s=0.05)


def test_lock_released_while_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "torch_uses_advisory_lock", lambda: False)
    lock = tmp_path / "lock"
    lock.write_text("")
    remover = threading.Timer(0.2, lock.unlink)
    remover.start()
    try:
        _build.wait_for_build_lock(tmp_path, timeout=10, poll_s=0.05)  # returns once the other build is done
    finally:
        remover.join()
    _build.wait_for_build_lock(tmp_path, timeout=10)  # no lock file at all


@pytest.mark.skipif(sys.platform == "win32", reason="uses fcntl")
def test_held_os_lock_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Newer torch holds an OS lock on `lock`: a leftover file is harmless, a lock held too long is not."""
    import fcntl

    pytest.importorskip("filelock")
    monkeypatch.setattr(_build, "torch_uses_advisory_lock", lambda: True)
    lock = tmp_path / "lock"
    lock.write_text("")
    os.utime(lock, (0, 0))
    _build.wait_for_build_lock(tmp_path, timeout=0.3)  # an old, unheld file does not block
    with open(lock, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(_build.StaleLockError) as info:
            _build.wait_for_build_lock(tmp_path, timeout=0.3)
    assert str(lock) in str(info.value) and "delete it" in str(info.value)


def test_stale_lock_stops_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through get_extension: the lock is reported as the reason, before anything is compiled."""
    from torch.utils import cpp_extension

    if torch.version.cuda is None or not cpp_extension.is_ninja_available():
        pytest.skip("needs a CUDA build of torch and ninja")
    monkeypatch.setattr(_build, "torch_uses_advisory_lock", lambda: False)
    monkeypatch.setattr(_build, "_cuda_home", lambda guess: "/toolkit")
    monkeypatch.setattr(cpp_extension, "load", lambda *a, **k: pytest.fail("compiled despite the stale lock"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    plan = _build.plan_build()
    plan.build_dir.mkdir(parents=True)
    lock = plan.build_dir / "lock"
    lock.write_text("")
    os.utime(lock, (0, 0))
    with pytest.warns(RuntimeWarning, match="StaleLockError"):
        assert _build.get_extension(strict=False) is None
    with pytest.raises(_build.BuildError, match=re.escape(str(lock))):
        _build.get_extension(strict=True)


def test_lock_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_build.LOCK_TIMEOUT_ENV, raising=False)
    assert _build.lock_timeout() == _build.DEFAULT_LOCK_TIMEOUT_S
    monkeypatch.setenv(_build.LOCK_TIMEOUT_ENV, "42")
    assert _build.lock_timeout() == 42.0
    for bad in ("soon", "-1"):
        monkeypatch.setenv(_build.LOCK_TIMEOUT_ENV, bad)
        with pytest.raises(_build.BuildError, match=_build.LOCK_TIMEOUT_ENV):
            _build.lock_timeout()
