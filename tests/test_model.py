"""The book's model, checkpoints that fail clearly, and the offline ImageNet option."""
from __future__ import annotations

import pytest
import torch

from idc.errors import CheckpointError, ConfigError
from idc.model import build_model, count_parameters, load_model, predict, save_checkpoint

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
    proba = predict(model, torch.zeros(3, 50, 50, 3, dtype=torch.uint8).numpy(), batch_size=2)
    assert proba.shape == (3, 2) and ((proba >= 0) & (proba <= 1)).all()
    assert proba.sum(axis=1) == pytest.approx(1.0, abs=1e-6)


class Linear2(torch.nn.Module):
    """P(class 1) known in closed form: logits (0, mean pixel) of the normalized image."""

    def forward(self, x):
        return torch.stack([torch.zeros(len(x)), x.mean(dim=(1, 2, 3))], dim=1)


def test_predict_rows_losses_and_prenormalized_input_agree():
    import numpy as np

    from idc.data.dataset import normalize_batch

    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 64, 128, 255, 32)])
    model = Linear2()
    means = (images.reshape(5, -1).astype(np.float32) / 255 - 0.5) / 0.5
    expected = 1 / (1 + np.exp(-means.mean(axis=1)))
    rows = np.array([4, 0, 3])
    losses = []
    got = predict(model, images, rows=rows, batch_size=2, targets=np.array([1, 0, 1]),
                  on_loss=lambda loss, n: losses.append((float(loss), n)), desc=None)
    assert got[:, 1] == pytest.approx(expected[rows], abs=1e-6)
    assert [n for _, n in losses] == [2, 1]
    first = -np.mean([np.log(expected[4]), np.log(1 - expected[0])])  # mean cross-entropy of batch 1
    assert losses[0][0] == pytest.approx(first, abs=1e-5)
    same = predict(model, normalize_batch(images), batch_size=3, desc=None)  # float NCHW: used as is
    assert same[:, 1] == pytest.approx(expected, abs=1e-6)


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
