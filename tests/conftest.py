import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state, so results never depend on test order."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _session_cwd(tmp_path_factory):
    """Module and session fixtures run in a scratch folder too, never in the user's checkout:
    a run left in ``./output`` by ``ecvit train`` there must not be auto-resumed by a test."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(previous)


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    """Each test runs in its own empty folder: whatever it writes to ``.`` stays there, and
    the repository files are reached through absolute paths (``ROOT``) only."""
    monkeypatch.chdir(tmp_path)
    yield
