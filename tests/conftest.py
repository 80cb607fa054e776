"""Shared fixtures: a fixed seed and the distinct small sizes of STYLE.md §9."""

import os

import pytest
import torch
from hypothesis import settings

# The same examples on every run, so CI cannot fail on a draw nobody has seen.
settings.register_profile("rnnkit", derandomize=True, deadline=None)
settings.load_profile("rnnkit")

# Distinct small sizes, so that swapped axes fail loudly.
B, T, D, H = 3, 5, 4, 6


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip where CUDA is absent (``make test-gpu`` runs only them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def triton_device() -> tuple[str, list[pytest.MarkDecorator]]:
    """For a module of Triton kernel tests, called before it imports the kernels: skips it
    where Triton is absent, or where neither its CPU interpreter (``TRITON_INTERPRET=1``) nor
    CUDA is; else returns the device of its tensors and its ``pytestmark`` (compiled on CUDA,
    the tests are marked gpu, so that ``make test-gpu`` runs them)."""
    pytest.importorskip("triton")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if not interpreted and not torch.cuda.is_available():
        pytest.skip(
            "Triton compiles for CUDA only; set TRITON_INTERPRET=1 to run its kernels on the CPU",
            allow_module_level=True,
        )
    return ("cpu", []) if interpreted else ("cuda", [pytest.mark.gpu])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one intra-op thread: tiny tensors gain nothing from threads,
    and on a shared machine waking idle threads for every small op costs more than the op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
