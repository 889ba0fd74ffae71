"""Stain normalization in the packed cache (data.stain_normalize) and HED stain jitter (train.augment).

Known answers on small arrays: a two-stain patch built from a stain matrix (Beer-Lambert, as Macenko
assumes), blank and uniform patches, and scikit-image's rgb2hed as the reference of the HED algebra.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.color import rgb2hed

from idc.data.augment import draw_batch, hed_jitter_
from idc.data.cache import PackedLoader, cache_key, load_or_build_cache
from idc.data.device_loader import DeviceLoader
from idc.data.stain import StainNormalizer, fit_params, normalizer_for, save_reference
from idc.errors import ConfigError
from idc.viz.stain import stain_figure

HE = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])  # haematoxylin, eosin (Ruifrok-Johnston-like)


def he_patch(seed: int, scale=(0.4, 0.3)) -> np.ndarray:
    """uint8 [50, 50, 3] = 240 exp(-HE C) with random non-negative concentrations C."""
    rng = np.random.default_rng(seed)
    c = np.stack([rng.gamma(2, scale[0], (50, 50)), rng.gamma(2, scale[1], (50, 50))], -1)
    return np.clip(240 * np.exp(-c @ HE.T), 0, 255).astype(np.uint8)


BLANK = np.full((50, 50, 3), 255, np.uint8)  # white glass: background
UNIFORM = np.broadcast_to(np.array([150, 80, 160], np.uint8), (50, 50, 3)).copy()  # tissue, but one colour


@pytest.mark.parametrize("method, tol", [("macenko", 1.0), ("reinhard", 0.5)])
def test_reference_normalized_is_the_reference(method, tol):
    ref = he_patch(0)
    back, status = StainNormalizer(method, fit_params(method, ref), {}).normalize(ref)
    diff = np.abs(back.astype(int) - ref.astype(int))
    # Reinhard: the LAB round trip and uint8 truncation (<= 1 grey level); Macenko: the 2-stain reconstruction
    assert status == "normalized" and diff.mean() <= tol and diff.max() <= 2


def test_normalization_moves_another_stain_towards_the_reference():
    ref, pale = he_patch(0), he_patch(1, scale=(0.15, 0.1))  # same stains, a third of the concentrations
    for method in ("macenko", "reinhard"):
        out, status = StainNormalizer(method, fit_params(method, ref), {}).normalize(pale)
        assert status == "normalized"
        assert abs(out.mean() - ref.mean()) < 0.5 * abs(pale.mean() - ref.mean())


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_blank_and_degenerate_patches_are_left_as_they_are(method):
    norm = StainNormalizer(method, fit_params(method, he_patch(0)), {})
    assert norm.normalize(BLANK)[1] == "background" and norm.normalize(BLANK)[0] is BLANK
    out, status = norm.normalize(UNIFORM)  # Macenko: one stain found twice; Reinhard: zero standard deviation
    assert status == "failed" and out is UNIFORM


def write(root, pid, c, k, img):
    path = root / str(pid) / str(c) / f"{pid}_idx5_x{1 + 50 * k}_y1_class{c}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path.relative_to(root).as_posix()


IMGS = [he_patch(0), he_patch(1, (0.15, 0.1)), BLANK, UNIFORM, he_patch(2)]


def small_set(root):
    """Five patches: two H&E-like training patches, a blank one, a one-colour and an H&E-like test patch."""
    return pd.DataFrame({"image_id": [write(root, 10 + k % 2, k % 2, k, im) for k, im in enumerate(IMGS)],
                         "split": ["train", "train", "train", "test", "test"], "target": [0, 1, 0, 1, 0]})


def test_cache_normalizes_counts_fallbacks_and_is_keyed_by_the_option(tmp_path, caplog):
    root = tmp_path / "set"
    df = small_set(root)
    record, png = tmp_path / "cache" / "stain_reference.json", tmp_path / "cache" / "stain_reference.png"
    record.parent.mkdir()
    norm = normalizer_for(df, root, "reinhard", 0, record)
    assert norm.reference["image_id"] in set(df["image_id"][:2])  # a training patch with tissue, never test
    with caplog.at_level("INFO", logger="idc"):
        out = load_or_build_cache(df, root, tmp_path / "cache", stain=norm, producer=True)
    assert dict(norm.counts) == {"normalized": 3, "background": 1, "failed": 1}
    assert any("3 normalized, 1 background" in r.getMessage() and "1 failed" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(out[2], BLANK), np.testing.assert_array_equal(out[3], UNIFORM)
    assert not np.array_equal(out[4], IMGS[4])
    plain = load_or_build_cache(df, root, tmp_path / "cache")
    assert not np.array_equal(plain[0], out[0]) or not np.array_equal(plain[1], out[1])
    save_reference(norm, record, png, root)
    again = normalizer_for(df, root, "reinhard", 0, record)  # read back from the record: the same reference
    assert again.key() == norm.key() and json.loads(record.read_text())["counts"]["failed"] == 1 and png.exists()
    keys = {cache_key(df, root, 50), cache_key(df, root, 50, norm.key()),
            cache_key(df, root, 50, normalizer_for(df, root, "macenko", 0, record).key())}
    assert len(keys) == 3  # each setting its own cache file
    save_reference(None, record, png, root)
    assert not record.exists() and not png.exists()
    with pytest.raises(ConfigError, match="stain_normalize"):
        normalizer_for(df, root, "vahadane", 0, record)


def test_stain_figure_draws_originals_normalizations_and_jitter(tmp_path):
    root = tmp_path / "set"
    path = stain_figure(small_set(root), root, tmp_path / "stain_normalization.png", n=2)
    assert path.stat().st_size > 10_000 and not list(tmp_path.glob(".*tmp*"))


def test_hed_jitter_is_identity_at_strength_zero_and_scales_haematoxylin():
    x = torch.from_numpy(he_patch(3).astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    hed = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    assert torch.allclose(hed_jitter_(x.clone(), hed), x, atol=1e-5)
    doubled = hed_jitter_(x.clone(), torch.tensor([[[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]))
    before, after = (rgb2hed(t[0].permute(1, 2, 0).double().numpy()) for t in (x, doubled))
    tissue = before[..., 0] > 0.02  # scikit-image's H channel, its own scale: doubling H doubles it
    np.testing.assert_allclose(after[..., 0][tissue], 2 * before[..., 0][tissue], rtol=0.02)
    np.testing.assert_allclose(after[..., 1][tissue], before[..., 1][tissue], atol=2e-3)


def test_stain_jitter_is_seeded_resumable_and_leaves_labels_alone():
    rng = np.random.default_rng(0)
    images = np.stack([he_patch(k) for k in range(12)])
    targets = rng.integers(0, 2, 12)
    kw = dict(shuffle=True, flip=True, seed=5)
    jit, plain = PackedLoader(images, targets, np.arange(12), 5, hed=(0.2, 0.1), **kw), PackedLoader(images, targets, np.arange(12), 5, **kw)
    jit.set_epoch(1), plain.set_epoch(1)
    first, again, ref = list(jit), list(jit), list(plain)  # an epoch re-run (a resume) repeats exactly
    assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(first, again))
    assert all(torch.equal(ya, yr) for (_, ya), (_, yr) in zip(first, ref))  # same order, same labels
    assert not torch.equal(first[0][0], ref[0][0])
    dev = DeviceLoader(images, targets, np.arange(12), 5, hed=(0.2, 0.1), **kw)  # the device-resident loader (CPU)
    dev.set_epoch(1)
    assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(dev, first))
    zero = PackedLoader(images, targets, np.arange(12), 5, hed=(0.0, 0.0), **kw)
    zero.set_epoch(1)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(zero, ref))  # strength 0: draws nothing, changes nothing
    flips, hed = draw_batch(np.random.default_rng(0), 1000, False, 0.2, 0.1)
    assert flips is None and 0.8 <= hed[:, 0].min() and hed[:, 0].max() <= 1.2 and np.abs(hed[:, 1]).max() <= 0.1


def test_cache_key_follows_a_generated_sets_manifest(tmp_path):
    """A set regenerated with other parameters keeps its file names and sizes: its manifest (beside the image
    folder) is part of the key, so the old packed pixels are never read for the new set."""
    root = tmp_path / "set" / "IDC_regular_ps50_idx5"
    root.mkdir(parents=True)
    df = pd.DataFrame({"image_id": ["1/0/a.png"], "width": [50], "height": [50]})
    plain = cache_key(df, root, 50)
    (root.parent / "manifest.json").write_text('{"difficulty": 0.0}')
    first = cache_key(df, root, 50)
    assert first != plain and cache_key(df, root, 50) == first
    (root.parent / "manifest.json").write_text('{"difficulty": 0.9}')
    assert cache_key(df, root, 50) not in (plain, first)
