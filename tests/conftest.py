import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch


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
    the repository's files are reached through absolute paths only."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(scope="session")
def pets_folder(tmp_path_factory) -> Path:
    """The shared run's data: ``_runs.make_folder``, 6 train and 6 val images per class."""
    from _runs import make_folder

    return make_folder(tmp_path_factory.mktemp("data") / "pets")


@pytest.fixture(scope="session")
def pets_run(pets_folder, tmp_path_factory) -> Path:
    """The folder of one finished ``ecvit train`` run on ``pets_folder`` (trained once per
    session): tests read and validate it; a command run on it must leave its checkpoints as
    they are."""
    from _runs import train_argv

    from ecvit.cli import main

    out = tmp_path_factory.mktemp("runs") / "pets"
    assert main(train_argv("--dataset", "folder", "--data-path", str(pets_folder),
                           "--output-dir", str(out))) == 0
    return out


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory) -> Path:
    """The folder of one finished 1-epoch run of the engine's probe model on 4 simulated
    classes (``_engine_helpers.tiny_cfg``), trained once per session; read-only for tests."""
    from _engine_helpers import tiny_cfg

    from ecvit.engine import train

    out = tmp_path_factory.mktemp("probe_run")
    train(tiny_cfg(out, "TRAIN.EPOCHS", "1", model="engine_probe_net"))
    return out
