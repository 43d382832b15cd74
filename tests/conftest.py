"""Shared test fixtures: the ../shared reference folder and tiny temporary run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one intra-op thread per worker, not two fighting for 2 cores
    torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path} is absent (it lives in ../shared beside the project)")
    return path


@pytest.fixture
def shared() -> type:
    """Gives tests `shared("fixtures", "metrics")`-style access with a clear skip when absent."""
    return shared_path
