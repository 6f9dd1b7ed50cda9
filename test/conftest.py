"""Shared pytest fixtures: the ../shared folder (CI only) and small seeded models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PARITY_FIXTURE = SHARED / "fixtures" / "parity" / "e2x_small"

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
torch.set_num_threads(2)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip when the CI-only shared fixtures are absent (a user's clone)."""
    return pytest.mark.skipif(not path.exists(), reason=f"needs ../shared fixtures ({path.name}); present in CI only")


@pytest.fixture(scope="session")
def nano_model():
    from lmeec_core.model import build_preset

    return build_preset("nano", image_size=128, seed=0)


@pytest.fixture(scope="session")
def shipped_model():
    """The trained nano checkpoint shipped in the package: the model that actually segments things."""
    from lmeec_core.model import load_checkpoint

    return load_checkpoint(REPO / "lmeec_core" / "assets" / "nano.pt")[0]
