"""Fixtures of the adapter tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """Run the tiny adapter models on one intra-op thread, then restore the setting.

    Their operations are microseconds long, so a second thread adds nothing,
    and when another process shares the CPU its spin-waits made this directory
    about 100x slower (measured: 255 s on 2 threads vs 2.5 s on 1).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
