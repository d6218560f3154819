"""Shared fixtures: tiny models are built once per session and never mutated."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile("default", max_examples=40, deadline=None, database=None)
settings.load_profile("default")
torch.set_num_threads(2)

from models import tiny_llava  # noqa: E402


@pytest.fixture(scope="session")
def llava_sdpa():
    return tiny_llava("sdpa")


@pytest.fixture(scope="session")
def llava_eager():
    return tiny_llava("eager")


@pytest.fixture(params=["sdpa", "eager"])
def llava(request, llava_sdpa, llava_eager):
    return llava_sdpa if request.param == "sdpa" else llava_eager
