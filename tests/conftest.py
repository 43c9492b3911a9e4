"""Fixtures shared by the test modules."""

import contextlib

import pytest
import torch


@contextlib.contextmanager
def _torch_threads(n: int):
    """On a shared 2-core machine, OpenMP barriers across oversubscribed cores make small
    convolutions 10-100x slower with 2 threads; results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One torch intra-op thread for a whole test module."""
    with _torch_threads(1):
        yield


@pytest.fixture
def one_thread():
    """One torch intra-op thread for one test (code run outside `train()`, which sets
    runtime.threads itself)."""
    with _torch_threads(1):
        yield
