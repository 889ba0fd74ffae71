"""Synthetic IDC set: Kaggle layout, determinism, generate-once, labels vs pixel ground truth."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from idc.config import DataConfig
from idc.data.synthetic import generate_synthetic, load_masks, patch_mask
from idc.errors import DataError

NAME = re.compile(r"^(\d+)/([01])/(\d+)_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def data_cfg(tmp_path, **kw):
    base = dict(root=str(tmp_path / "set" / "IDC_regular_ps50_idx5"), masks_dir=str(tmp_path / "set" / "masks"),
                num_patients=4, patches_per_patient=60, seed=0, workers=1, edge_patch_prob=0.5)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **kw})


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synth")
    cfg = data_cfg(tmp)
    return cfg, generate_synthetic(cfg)


def test_exact_kaggle_layout(small_set):
    cfg, root = small_set
    names = files(root)
    assert len(names) > 100
    for n in names:
        m = NAME.match(n)
        assert m, n
        pid, folder, pid2, x, y, cls = m.groups()
        assert pid == pid2 and folder == cls
        assert (int(x) - 1) % 50 == 0 and (int(y) - 1) % 50 == 0


def test_rgb_and_edge_patches(small_set):
    _, root = small_set
    sizes = set()
    for p in root.rglob("*.png"):
        with Image.open(p) as im:
            assert im.mode == "RGB"
            sizes.add(im.size)
    assert (50, 50) in sizes and any(s != (50, 50) for s in sizes)


def test_positive_rate_and_per_patient_variation(tmp_path):
    cfg = data_cfg(tmp_path, num_patients=8, patches_per_patient=80)
    root = generate_synthetic(cfg)
    labels = [(n.split("/")[0], int(n.split("/")[1])) for n in files(root)]
    rate = np.mean([c for _, c in labels])
    assert 0.15 <= rate <= 0.45
    per = {}
    for pid, c in labels:
        per.setdefault(pid, []).append(c)
    shares = [np.mean(v) for v in per.values()]
    assert max(shares) - min(shares) > 0.1


def test_deterministic_from_seed(tmp_path):
    def digest(cfg):
        root = generate_synthetic(cfg)
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.png")))).hexdigest()

    a = digest(data_cfg(tmp_path / "a", num_patients=3, patches_per_patient=30))
    b = digest(data_cfg(tmp_path / "b", num_patients=3, patches_per_patient=30))
    c = digest(data_cfg(tmp_path / "c", num_patients=3, patches_per_patient=30, seed=1))
    assert a == b and a != c


def test_generated_once_then_regenerated_on_new_parameters(tmp_path):
    cfg = data_cfg(tmp_path, num_patients=3, patches_per_patient=30)
    root = generate_synthetic(cfg)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    generate_synthetic(cfg)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == before
    generate_synthetic(data_cfg(tmp_path, num_patients=4, patches_per_patient=30))
    assert len({p.parts[-3] for p in root.rglob("*.png")}) == 4
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]


def test_refuses_to_overwrite_foreign_files(tmp_path):
    cfg = data_cfg(tmp_path)
    (tmp_path / "set" / "IDC_regular_ps50_idx5").mkdir(parents=True)
    (tmp_path / "set" / "IDC_regular_ps50_idx5" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate_synthetic(cfg)


def test_masks_align_with_labels(small_set):
    cfg, root = small_set
    fractions = {0: [], 1: []}
    for n in files(root):
        pid, cls, x, y = int(n.split("/")[0]), int(n.split("/")[1]), *map(int, re.findall(r"_x(\d+)_y(\d+)_", n)[0])
        m = load_masks(cfg.masks_dir, pid)
        assert m["mask"].dtype == bool and m["mask"].shape == m["tissue"].shape
        fractions[cls].append(patch_mask(m["mask"], x, y).mean())
    assert np.mean(fractions[1]) > 5 * np.mean(fractions[0])


def test_patch_mask_pads_past_the_edge():
    mask = np.ones((60, 60), bool)
    out = patch_mask(mask, 30, 40)
    assert out.shape == (50, 50) and out[:20, :30].all() and not out[20:].any() and not out[:, 30:].any()
