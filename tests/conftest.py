"""Fixtures the test modules share: the repository's grids, config.yaml (the paper's) and config/tiny.yaml."""

import pytest

from kdgrid.grid import expand_grid, load_config
from workflow_support import ROOT


@pytest.fixture
def paper_config() -> dict:
    """config.yaml as the Snakefile reads it, loaded for each test (free to change)."""
    return load_config(ROOT / "config.yaml")


@pytest.fixture(scope="session")
def paper():
    """The paper's grid, expanded once (a Grid cannot change once built)."""
    return expand_grid(load_config(ROOT / "config.yaml"))


@pytest.fixture(scope="session")
def tiny():
    """The embedded tiny grid (config/tiny.yaml, the demo's), expanded once."""
    return expand_grid(load_config(ROOT / "config" / "tiny.yaml"))
