"""Fixtures of the llava-codebase tests: they run only where ``llava-torch`` is installed.

The legacy environment (transformers 4.37, see docs/adapters.md and .ci/run)
runs them; in the main environment each module is skipped at import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def single_intra_op_thread():
    """Tiny models: one intra-op thread is faster and immune to a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tower(tmp_path_factory):
    """A saved tiny CLIP vision tower (``mm_vision_tower`` points at it)."""
    import legacy_models

    return legacy_models.save_vision_tower(tmp_path_factory.mktemp("tower"))


@pytest.fixture(scope="session")
def models(tower):
    """Tiny models per (family, attention implementation), built once."""
    import legacy_models

    cache: dict[tuple[str, str], torch.nn.Module] = {}

    def get(family: str, attn: str = "sdpa") -> torch.nn.Module:
        if (family, attn) not in cache:
            cache[family, attn] = legacy_models.build(family, tower, attn)
        return cache[family, attn]

    return get
