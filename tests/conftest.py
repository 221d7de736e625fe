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
