"""Shared pytest fixtures: the ../shared folder (CI only), small seeded models, a private ROS domain."""
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


@pytest.fixture(scope="module")
def ros(tmp_path_factory, request):
    """A ROS domain of the test module's own, for its node processes and this process's clients."""
    from ros_helpers import RosEnv, require_ros

    require_ros()
    from lmeec_ros.local_ros import used_by_this_process

    env = RosEnv.create(tmp_path_factory.mktemp(request.module.__name__))
    with used_by_this_process(env.env):
        yield env


@pytest.fixture(scope="module")
def client(ros, node):
    """A client node on that domain, started after the module's `node` fixture."""
    from ros_helpers import RosClient

    c = RosClient(ros)
    yield c
    c.close()
