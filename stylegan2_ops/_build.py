"""Building and loading the CUDA extension: on first use (never at import), once per process.

One extension holds both ops (one binding .cpp plus the .cu files), compiled with
`torch.utils.cpp_extension.load` and ninja into a folder named by a digest of the sources, the
target architectures and the torch/CUDA versions, so edits rebuild and unchanged sources load the
cached library. A failed build is remembered with its reason and never retried in the process:
`get_extension(strict=False)` then warns once and returns None (callers fall back to the reference
path); `get_extension(strict=True)` raises BuildError with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

CSRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu")  # compiled, in this order
HEADERS = ("ops.h", "common.cuh", "bias_act_kernel.cuh", "upfirdn2d_kernel.cuh")  # part of the digest
EXTRA_CFLAGS: tuple[str, ...] = ()
EXTRA_CUDA_CFLAGS: tuple[str, ...] = ()
EXPECTED_FUNCTIONS = ("bias_act", "upfirdn2d")

FALLBACK_CUDA_HOME = "/usr/local/cuda"  # the standard toolkit folder, used when torch's guess has no libcudart
DEFAULT_ARCH_WITHOUT_GPU = "9.0+PTX"  # H100/H200 code, plus PTX that newer GPUs can JIT
LOCK_TIMEOUT_ENV = "STYLEGAN2_OPS_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 600.0


class BuildError(RuntimeError):
    """The CUDA extension could not be built or loaded; the message says why."""


class StaleLockError(BuildError):
    """A build lock blocks the build for longer than the lock timeout."""


# ------------------------------------------------------------------------------------------------
# Per-process cache.

_state_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False
_error: BaseException | None = None
_warned = False


def get_extension(strict: bool) -> ModuleType | None:
    """The loaded extension, building it on the first call; None (or BuildError if strict) if it fails.

    The build is attempted at most once per process. Without `strict`, the first fallback warns
    (warnings.warn, with the reason); later ones are silent.
    """
    global _module, _tried, _error, _warned
    with _state_lock:
        if _module is None and not _tried:
            _tried = True
            try:
                _module = build()
            except Exception as e:  # any failure (compiler, loader, lock, environment) means "no kernels"
                _error = e
                logger.info("stylegan2_ops: CUDA extension unavailable: %s", e)
        if _module is not None:
            return _module
        reason = f"{type(_error).__name__}: {_error}"
        if strict:
            raise BuildError(f"stylegan2_ops: the CUDA kernels are unavailable ({reason})") from _error
        if not _warned:
            _warned = True
            warnings.warn(
                f"stylegan2_ops: could not build the CUDA kernels; falling back to the slower reference "
                f"implementation. Reason: {reason}",
                RuntimeWarning,
                stacklevel=4,
            )
        return None


def reset() -> None:
    """Forget the cached build result (tests use this; a loaded library stays loaded)."""
    global _module, _tried, _error, _warned
    with _state_lock:
        _module, _tried, _error, _warned = None, False, None, False


# ------------------------------------------------------------------------------------------------
# The build itself.


@dataclass(frozen=True)
class BuildPlan:
    """Everything that decides one build: what is compiled, for which GPUs, where, with which toolkit."""

    name: str  # extension (module) name, carrying the digest
    build_dir: Path  # ninja's folder; the .so lands here
    sources: tuple[Path, ...]  # compiled files
    arch_list: str  # TORCH_CUDA_ARCH_LIST used
    cuda_home: str  # CUDA toolkit folder used


def plan_build(source_dir: Path | str = CSRC_DIR, build_root: Path | str | None = None) -> BuildPlan:
    """Work out the build (toolkit, architectures, digest, folder) without compiling anything."""
    from torch.utils import cpp_extension

    source_dir = Path(source_dir)
    missing = [n for n in SOURCES + HEADERS if not (source_dir / n).is_file()]
    if missing:
        raise BuildError(f"stylegan2_ops: sources missing from {source_dir}: {', '.join(missing)}")
    cuda_home = _cuda_home(cpp_extension.CUDA_HOME)
    arch_list = _arch_list()
    digest = _digest(source_dir, arch_list)
    name = f"stylegan2_ops_{digest[:16]}"
    root = Path(build_root) if build_root is not None else _default_build_root()
    return BuildPlan(
        name=name,
        build_dir=root / name,
        sources=tuple(source_dir / n for n in SOURCES),
        arch_list=arch_list,
        cuda_home=cuda_home,
    )


def build(
    verbose: bool = False,
    source_dir: Path | str = CSRC_DIR,
    build_root: Path | str | None = None,
    plan: BuildPlan | None = None,
) -> ModuleType:
    """Compile (or reuse) and import the extension now; BuildError with the reason on failure.

    Args:
        verbose: let torch/ninja show the compiler output (on stdout; for the CLI).
        source_dir: folder with the sources (tests point this at modified copies).
        build_root: parent of the build folder; None = TORCH_EXTENSIONS_DIR, else torch's default.
        plan: a plan from `plan_build` (then source_dir and build_root are not used).
    """
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        raise BuildError(f"stylegan2_ops: this torch ({torch.__version__}) is built without CUDA")
    if not cpp_extension.is_ninja_available():
        raise BuildError("stylegan2_ops: ninja is required to build the CUDA kernels (pip install ninja)")
    if plan is None:
        plan = plan_build(source_dir, build_root)
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    wait_for_build_lock(plan.build_dir)
    logger.info("stylegan2_ops: building/loading %s (arch %s) in %s", plan.name, plan.arch_list, plan.build_dir)
    start = time.monotonic()
    try:
        with _build_environment(cpp_extension, plan):
            module = cpp_extension.load(
                name=plan.name,
                sources=[str(s) for s in plan.sources],
                extra_cflags=list(EXTRA_CFLAGS),
                extra_cuda_cflags=list(EXTRA_CUDA_CFLAGS),
                extra_include_paths=[str(plan.sources[0].parent)],
                build_directory=str(plan.build_dir),
                with_cuda=True,
                verbose=verbose,
            )
    except Exception as e:  # compiler, linker and import errors all arrive as various exception types
        raise BuildError(f"stylegan2_ops: building {plan.name} in {plan.build_dir} failed: {e}") from e
    absent = [f for f in EXPECTED_FUNCTIONS if not hasattr(module, f)]
    if absent:
        raise BuildError(f"stylegan2_ops: the built module {module.__file__} lacks {', '.join(absent)}")
    logger.info("stylegan2_ops: %s ready after %.1f s: %s", plan.name, time.monotonic() - start, module.__file__)
    return module


# ------------------------------------------------------------------------------------------------
# Helpers.


def _has_cudart(home: str) -> bool:
    patterns = ("lib64/libcudart.so*", "lib/libcudart.so*", "targets/*/lib/libcudart.so*", "lib/x64/cudart.lib")
    return any(glob.glob(os.path.join(home, p)) for p in patterns)


def _cuda_home(torch_guess: str | None) -> str:
    """The CUDA toolkit folder: $CUDA_HOME/$CUDA_PATH if set, else torch's guess, else /usr/local/cuda.

    torch guesses from the nvcc on PATH; behind a wrapper script that folder lacks the CUDA
    libraries and linking fails (`cannot find -lcudart`), so the standard folder wins then.
    """
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not home:
        home = torch_guess
        if not (home and _has_cudart(home)) and os.path.isdir(FALLBACK_CUDA_HOME):
            logger.info(
                "stylegan2_ops: torch's CUDA_HOME guess %r has no libcudart; using %s", home, FALLBACK_CUDA_HOME
            )
            home = FALLBACK_CUDA_HOME
    if not home or not os.path.isfile(os.path.join(home, "bin", "nvcc")):
        raise BuildError(
            f"stylegan2_ops: no CUDA toolkit found (no nvcc under CUDA_HOME={home!r}); "
            "install the CUDA toolkit or set CUDA_HOME"
        )
    return home


def _arch_list() -> str:
    """$TORCH_CUDA_ARCH_LIST if set, else the architectures of the visible GPUs, else 9.0+PTX."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if env and env != "native":
        return env
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return DEFAULT_ARCH_WITHOUT_GPU


def _digest(source_dir: Path, arch_list: str) -> str:
    """sha256 over the sources and everything else that changes the binary."""
    import torch

    h = hashlib.sha256()
    for n in SOURCES + HEADERS:
        h.update(n.encode() + b"\0" + (source_dir / n).read_bytes() + b"\0")
    for item in (
        arch_list,
        torch.__version__,
        torch.version.cuda or "",
        sys.version.split()[0],
        EXTRA_CFLAGS,
        EXTRA_CUDA_CFLAGS,
    ):
        h.update(repr(item).encode() + b"\0")
    return h.hexdigest()


def _default_build_root() -> Path:
    """$TORCH_EXTENSIONS_DIR, else torch's default cache folder with its python/CUDA subfolder."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    import torch
    from torch.utils import cpp_extension

    cuda = (torch.version.cuda or "cpu").replace(".", "")
    return Path(cpp_extension.get_default_build_root()) / f"py{sys.version_info.major}{sys.version_info.minor}_cu{cuda}"


@contextlib.contextmanager
def _build_environment(cpp_extension: ModuleType, plan: BuildPlan) -> Iterator[None]:
    """Point torch at the plan's toolkit and architectures for the build only, then restore."""
    saved_env = {k: os.environ.get(k) for k in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    saved_home = cpp_extension.CUDA_HOME
    os.environ["CUDA_HOME"] = plan.cuda_home
    os.environ["TORCH_CUDA_ARCH_LIST"] = plan.arch_list
    cpp_extension.CUDA_HOME = plan.cuda_home  # read once by torch at import; the build uses this global
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lock_timeout() -> float:
    """Seconds a build lock may block before it is reported ($STYLEGAN2_OPS_LOCK_TIMEOUT, default 600)."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError as e:
        raise BuildError(f"stylegan2_ops: {LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from e
    if value <= 0:
        raise BuildError(f"stylegan2_ops: {LOCK_TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def torch_uses_advisory_lock() -> bool:
    """True when torch guards builds with an OS lock (filelock), False for its older FileBaton.

    FileBaton treats the mere existence of `lock` as "a build is running" and waits forever on one
    left by a killed build; an OS lock dies with its holder, and its file stays behind harmlessly.
    """
    from torch.utils import cpp_extension

    return hasattr(cpp_extension, "FileLock")


def wait_for_build_lock(build_dir: Path, timeout: float | None = None, poll_s: float = 0.5) -> None:
    """Wait while another build holds `build_dir`'s lock; StaleLockError instead of waiting forever.

    With torch's FileBaton, a lock file older than `timeout`, or one still there after waiting
    `timeout`, is reported; with an OS lock, one still held after `timeout` is. The error names
    the file and says to delete it.
    """
    timeout = lock_timeout() if timeout is None else timeout
    lock = Path(build_dir) / "lock"
    advice = (
        f"If no other build of stylegan2_ops is running, a killed build left it behind: delete it "
        f"(rm {lock}) and retry. To wait longer for slow builds, raise {LOCK_TIMEOUT_ENV} (now {timeout:g} s)."
    )
    if torch_uses_advisory_lock():
        from filelock import FileLock, Timeout  # torch's own dependency when it uses OS locks

        try:
            with FileLock(str(lock), timeout=timeout):
                return
        except Timeout as e:
            raise StaleLockError(
                f"stylegan2_ops: the build lock {lock} is still held after {timeout:g} s. {advice}"
            ) from e

    start = time.monotonic()
    logged = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        waited = time.monotonic() - start
        if age > timeout or waited > timeout:
            raise StaleLockError(
                f"stylegan2_ops: the build lock {lock} is {age:.0f} s old (waited {waited:.0f} s). {advice}"
            )
        if not logged:
            logger.info("stylegan2_ops: waiting for %s (another build is running?)", lock)
            logged = True
        time.sleep(max(min(poll_s, timeout - waited), 0.01))
