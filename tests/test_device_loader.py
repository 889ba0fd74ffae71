"""DeviceLoader == PackedLoader on CPU: same batches, same flips, same targets for the same seed.

Resident and streamed (a budget too small for the rows), every sampling mode the training uses.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from idc.data.cache import PackedLoader
from idc.data.augment import flip_normalize
from idc.data.device_loader import DeviceLoader, epoch_plan

N, BATCH = 37, 8
ROW_BYTES = 50 * 50 * 3


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N + 5, 50, 50, 3), dtype=np.uint8)  # random pixels: every flip shows
    targets = rng.integers(0, 2, N + 5)
    indices = np.sort(rng.choice(N + 5, N, replace=False))  # a subset of the cache, like the train rows
    return images, targets, indices


CASES = {
    "shuffle+flip": dict(shuffle=True, flip=True, seed=3),
    "drop_last": dict(shuffle=True, flip=True, seed=4, drop_last=True),
    "no flip, in order": dict(),
    "rank 1 of 3": dict(shuffle=True, flip=True, seed=5, rank=1, world_size=3),
    "weighted sampler": dict(flip=True, seed=6, sample_weights=np.linspace(1, 5, N)),
}


def both(data, memory_budget=None, chunk_bytes=BATCH * ROW_BYTES * 2, **kw):
    images, targets, indices = data
    ref = PackedLoader(images, targets, indices, BATCH, **kw)
    dev = DeviceLoader(images, targets, indices, BATCH, memory_budget=memory_budget, chunk_bytes=chunk_bytes, **kw)
    return ref, dev


@pytest.mark.parametrize("mode", ["resident", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_batches_and_flips_as_packed_loader(data, case, mode):
    ref, dev = both(data, memory_budget=None if mode == "resident" else ROW_BYTES, **CASES[case])
    assert dev.resident == (mode == "resident") and len(dev) == len(ref)
    for epoch in (0, 1):
        ref.set_epoch(epoch), dev.set_epoch(epoch)
        got, expected = list(dev), list(ref)
        assert len(got) == len(expected) == len(ref)
        for (x, y), (ex, ey) in zip(got, expected):
            assert x.dtype == torch.float32 and x.is_contiguous()
            assert torch.equal(x, ex) and torch.equal(y, ey)


def test_epochs_differ_and_flips_happen(data):
    _, dev = both(data, shuffle=True, flip=True, seed=3)
    first = torch.cat([x for x, _ in dev])
    dev.set_epoch(1)
    assert not torch.equal(first, torch.cat([x for x, _ in dev]))
    plan = epoch_plan(dev, np.random.default_rng([3, 0]))
    assert 0 < plan[2].mean() < 1  # some images flipped, some not, on both axes


def test_flip_normalize_matches_explicit_flips_and_channels_last():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (6, 50, 50, 3), dtype=np.uint8))
    flips = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    out = flip_normalize(x, flips)
    for i, (h, v) in enumerate(flips.tolist()):
        img = x[i].permute(2, 0, 1).float() / 255
        img = img.flip(2) if h else img
        img = img.flip(1) if v else img
        assert torch.equal(out[i], (img - 0.5) / 0.5)
    cl = flip_normalize(x, flips, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, out)


def test_streamed_chunks_hold_whole_batches(data):
    _, dev = both(data, memory_budget=0, chunk_bytes=1, shuffle=True)  # chunk smaller than a batch: one batch each
    assert not dev.resident and dev.chunk_batches == 1
    assert sum(len(y) for _, y in dev) == N


def test_make_loader_picks_by_kind_and_device(data):
    from idc.data.device_loader import make_loader, resident_rows, resolve_loader
    from idc.errors import ConfigError

    images, targets, indices = data
    assert resolve_loader("auto", torch.device("cpu")) == "packed"
    assert resolve_loader("auto", torch.device("cuda")) == "device"
    assert type(make_loader("auto", images, targets, indices, BATCH, device="cpu")) is PackedLoader
    dev = make_loader("device", images, targets, indices, BATCH, device="cpu", memory_budget_gb=1e-9, seed=1, shuffle=True)
    assert isinstance(dev, DeviceLoader) and not dev.resident
    with pytest.raises(ConfigError, match="train.loader"):
        resolve_loader("gpu", torch.device("cpu"))
    assert resident_rows(images, indices, "cpu") is None  # on CPU the memory map is read per batch


def test_eval_inputs_renumber_resident_rows(monkeypatch):
    from idc.data.device_loader import eval_inputs

    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 50, 50, 3), np.uint8)
    rows = {"train": np.array([0, 1, 2]), "val": np.array([7, 3]), "test": np.array([9, 5, 4])}
    targets = np.arange(10) % 2
    same = eval_inputs("device", images, rows, targets, "cpu")  # CPU: the memory map, unchanged
    assert same[0] is images and same[1] is rows
    # an accelerator's path, on the CPU: resident_rows made to return the rows, as it does on a GPU
    monkeypatch.setattr("idc.data.device_loader.resident_rows", lambda im, r, d, b=None: torch.from_numpy(im[r]))
    res, new_rows, new_targets = eval_inputs("device", images, rows, targets, "cpu")
    for split in ("val", "test"):
        assert torch.equal(res[new_rows[split]], torch.from_numpy(images[rows[split]]))
        assert np.array_equal(new_targets[new_rows[split]], targets[rows[split]])


def test_training_with_the_device_loader_on_cpu_equals_the_packed_loader(tiny_trained, tiny_data_dir, tmp_path):
    """train.loader=device on the CPU reproduces the default (packed) run bit for bit: CPU results do not change."""
    import pandas as pd

    from idc import train
    from tests.helpers import compose_cfg, copy_run

    run = copy_run(tiny_trained, tmp_path / "device")
    train.fit(compose_cfg(run, "train.loader=device", data_dir=tiny_data_dir), run / "model_device")
    drop = ["seconds", "images_per_s"]
    a = pd.read_csv(tiny_trained / "model" / "history.csv").drop(columns=drop)
    b = pd.read_csv(run / "model_device" / "history.csv").drop(columns=drop)
    pd.testing.assert_frame_equal(a, b)
    wa = torch.load(tiny_trained / "model" / "last.pt", weights_only=True)["model"]
    wb = torch.load(run / "model_device" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
