import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import ecvit
from ecvit.io.checkpoint import extract_state_dict, read_checkpoint, save_atomic
from ecvit.errors import CheckpointError, StorageError


class _Exploit:
    """Unpickling this would call os.system: the safe loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        ecvit.load_checkpoint(path)
    assert not (tmp_path / "EXPLOITED").exists()


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_atomic_save_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "ckpt" / "checkpoint.pth"
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "classes": ["a", "b"]}
    save_atomic(state, path)
    save_atomic({**state, "epoch": 4}, path)
    loaded = read_checkpoint(path)
    assert loaded["epoch"] == 4 and loaded["classes"] == ["a", "b"]
    assert torch.equal(extract_state_dict(loaded)["w"], torch.arange(4.0))
    assert os.listdir(path.parent) == ["checkpoint.pth"]


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"epoch": 1}, path)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(StorageError, match="disk full, previous checkpoint kept"):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"model": {"w": torch.randn(100)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_safetensors_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"module.w": torch.ones(2)}, str(path), metadata={"model_name": '"cvt_13"'})
    ckpt = read_checkpoint(path)
    assert ckpt["model_name"] == "cvt_13"
    assert list(extract_state_dict(ckpt)) == ["w"]
