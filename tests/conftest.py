"""Fixtures shared by every tier: one local Ray instance for the whole test session."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[ModuleType]:
    """Ray on this machine with 2 CPUs, started once per test session (it takes seconds) and shut down after."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()
