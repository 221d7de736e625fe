"""Shared fixtures: the tiny random backbone (milliseconds per forward) and, for slow tests, SmolLM2."""

from __future__ import annotations

import pytest

from cbp_fed.backbone import FrozenLM


@pytest.fixture(scope="session")
def tiny() -> FrozenLM:
    return FrozenLM.load("tiny-random")


@pytest.fixture(scope="session")
def smollm2() -> FrozenLM:
    return FrozenLM.load("smollm2-135m", dtype="fp32")


@pytest.fixture()
def task_identity():
    """Flower builds a message's metadata from the process's TaskIdentity, which only a running app sets."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
