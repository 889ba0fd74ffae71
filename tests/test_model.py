"""The book's model, checkpoints that fail clearly, and the offline ImageNet option."""
from __future__ import annotations

import pytest
import torch

from idc.errors import CheckpointError, ConfigError
from idc.model import build_model, count_parameters, load_model, predict_proba, save_checkpoint

BOOK = {"arch": "resnet18", "head": [512, 256], "dropout": 0.5, "num_classes": 2, "weights": None}


def test_book_head_has_11_572_546_parameters():
    model = build_model(BOOK)
    assert count_parameters(model) == 11_572_546
    kinds = [type(m).__name__ for m in model.fc]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Dropout"] * 2 + ["Linear"]
    assert model(torch.zeros(2, 3, 50, 50)).shape == (2, 2)


def test_imagenet_weights_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="model.weights=imagenet needs .* use model.weights=null"):
        build_model({**BOOK, "weights": "imagenet"})


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="model.arch"):
        build_model({**BOOK, "arch": "vgg"})


def checkpoint(tmp_path, **extra):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": build_model(BOOK).state_dict(), "model_cfg": BOOK, "epoch": 0,
                           "data_hash": "abc", **extra})
    return path


def test_load_roundtrip_and_predict(tmp_path):
    model, meta = load_model(checkpoint(tmp_path), data_hash="abc", model_cfg=BOOK)
    assert meta["epoch"] == 0 and not model.training
    proba = predict_proba(model, torch.zeros(3, 50, 50, 3, dtype=torch.uint8).numpy(), batch_size=2)
    assert proba.shape == (3,) and ((proba >= 0) & (proba <= 1)).all()


def test_garbage_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable idc checkpoint"):
        load_model(bad)


def test_foreign_dict_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not written by idc"):
        load_model(path)


def test_architecture_mismatch_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="config asks for"):
        load_model(checkpoint(tmp_path), model_cfg={**BOOK, "head": [256]})


def test_state_dict_mismatch_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": build_model({**BOOK, "head": [128]}).state_dict(), "model_cfg": BOOK, "epoch": 0})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(path)


def test_data_hash_mismatch_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="different data/patches.csv"):
        load_model(checkpoint(tmp_path), data_hash="def")
