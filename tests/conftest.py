"""Shared pytest configuration: markers and a deterministic CPU setup."""

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "nvcc: builds CUDA sources; skipped without nvcc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (none available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test: tiny models gain nothing from intra-op threads, and on a shared
    2-core machine threads make them crawl. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def demo_pipe():
    """The shipped demo bundle's pipeline on the CPU, one thread, loaded once per test module."""
    from ficekit import FicePipeline

    torch.set_num_threads(1)
    return FicePipeline.from_bundle("demo", device="cpu")
