"""Metrics tests run torch single-threaded: their tensors are small, and on a shared 2-core
machine OpenMP's thread hand-offs cost more than they save (a 9-image SWD took 4 s with 2
threads and 0.3 s with 1). The previous setting is restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
