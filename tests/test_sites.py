"""Site-shift cohort (data.sites, data.test_site): without sites the generator is unchanged (same random draws,
same manifest, same patch_info columns); a site changes the stain and nothing else, by the amount its protocol
says; the test split is exactly the test site's patients; a bad test_site is one line; the site-shift table."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage as ndi
from sklearn.metrics import roc_auc_score

from idc.config import DataConfig
from idc.data.site_shift import paired_difference, sign_test, site_shift_table
from idc.data.sites import assign_sites
from idc.data.split import assert_disjoint, split_patients
from idc.data.synthetic import generate_synthetic, load_masks, manifest_for, patient_sites
from idc.data.tissue import StainProtocol, render_slide
from idc.errors import ConfigError
from idc.prepare_data import build_index
from idc.viz.stain import site_figure
from tests.helpers import compose_cfg, stage_error

SITES = [{"name": "A"},
         {"name": "B", "background": [250.0, 235.0, 240.0], "h_intensity": 0.8},
         {"name": "C", "hematoxylin": [0.78, 0.58, 0.22], "eosin": [0.2, 0.85, 0.5], "h_intensity": 1.4,
          "background": [238.0, 233.0, 205.0]}]


def data_cfg(folder, **kw):
    base = dict(root=str(folder / "IDC_regular_ps50_idx5"), masks_dir=str(folder / "masks"), num_patients=6,
                patches_per_patient=20, seed=0, workers=1, edge_patch_prob=0.0)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **kw})


def pngs(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    cfg = data_cfg(tmp_path_factory.mktemp("plain"))
    return cfg, generate_synthetic(cfg)


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory):
    cfg = data_cfg(tmp_path_factory.mktemp("sites"), sites=SITES, test_site="C")
    return cfg, generate_synthetic(cfg)


def test_the_default_protocol_draws_and_renders_exactly_as_without_one():
    a = render_slide(np.random.default_rng(5), 3, 3, 0.4, difficulty=0.0)
    b = render_slide(np.random.default_rng(5), 3, 3, 0.4, difficulty=0.0, protocol=StainProtocol())
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.rgb_free, b.rgb_free)


def test_one_default_site_is_the_default_set_byte_for_byte(plain, tmp_path):
    cfg, root = plain
    assert "sites" not in manifest_for(cfg) and "test_site" not in manifest_for(cfg)  # no regeneration of old sets
    assert "site" not in pd.read_csv(root.parent / "patch_info.csv").columns
    one = generate_synthetic(data_cfg(tmp_path, sites=[{"name": "A"}]))
    assert pngs(one) == pngs(root)  # the site path consumes the random stream exactly as the default
    assert (pd.read_csv(one.parent / "patch_info.csv")["site"] == "A").all()


def test_glass_takes_the_site_background_by_the_known_ratio():
    """Beer-Lambert with I0 per channel: the same slide (same draws) under background (200, 220, 245) is the
    default slide times I0 / 245 per channel (blur is linear; the noise has mean 0)."""
    bg = (200.0, 220.0, 245.0)
    a = render_slide(np.random.default_rng(2), 3, 3, 0.4, difficulty=0.0).rgb.astype(float)
    b = render_slide(np.random.default_rng(2), 3, 3, 0.4, difficulty=0.0,
                     protocol=StainProtocol(background=bg)).rgb.astype(float)
    ratio = b.reshape(-1, 3).mean(0) / a.reshape(-1, 3).mean(0)
    assert np.allclose(ratio, np.array(bg) / 245.0, atol=0.01), ratio


def test_sites_change_only_the_stain_round_robin_by_patient_id(plain, three_sites):
    (_, root0), (cfg, root) = plain, three_sites
    info = pd.read_csv(root.parent / "patch_info.csv")
    pids = sorted(info["patient_id"].unique())
    assert info.groupby("patient_id")["site"].first()[pids].tolist() == assign_sites(6, ["A", "B", "C"])
    assert sorted(pngs(root)) == sorted(pngs(root0))  # the same patches of the same tissue ...
    for pid in pids:
        for key in ("labels", "tissue"):
            assert np.array_equal(load_masks(cfg.masks_dir, pid, (key,))[key],
                                  load_masks(str(root0.parent / "masks"), pid, (key,))[key])
    glass = {}  # ... in another stain: the glass has each site's colour (R / B ratio: per-patient factors cancel)
    for (pid, site), rows in info.groupby(["patient_id", "site"]):
        tissue = load_masks(cfg.masks_dir, pid, ("tissue",))["tissue"]
        far = ~ndi.binary_dilation(tissue, iterations=3)
        px = [np.asarray(Image.open(root / r.image_id))[far[r.y:r.y + 50, r.x:r.x + 50]] for r in rows.itertuples()]
        rgb = np.concatenate(px).astype(float).mean(0)
        glass.setdefault(site, []).append(rgb[0] / rgb[2])
    for s in SITES:
        bg = s.get("background", [245.0] * 3)
        assert np.allclose(glass[s["name"]], bg[0] / bg[2], atol=0.03), (s["name"], glass[s["name"]])


def test_the_test_split_is_exactly_the_test_site(three_sites, tmp_path):
    cfg, _ = three_sites
    df, _, _, site_of = build_index(OmegaConf.create({"data": cfg}))
    assert site_of == patient_sites(cfg)
    info = pd.read_csv(Path(str(cfg.root)).parent / "patch_info.csv")
    site = df["patient_id"].map(info.groupby("patient_id")["site"].first())
    assert set(df.loc[df["split"] == "test", "patient_id"]) == set(df.loc[site == "C", "patient_id"])
    assert set(site[df["split"] == "val"]) == {"A", "B"} and set(site[df["split"] == "train"]) == {"A", "B"}
    assert (info.groupby("patient_id")["role"].first()[df["patient_id"]].to_numpy() == df["split"].to_numpy()).all()
    path = site_figure(df, patient_sites(cfg), cfg.root, tmp_path / "site_shift.png", n=2)
    assert Image.open(path).size[1] > Image.open(path).size[0] / 4  # three rows of two patches


def test_site_split_is_seeded_disjoint_and_keeps_the_val_share():
    pids = np.arange(100, 130)
    sites = dict(zip(pids.tolist(), assign_sites(30, ["A", "B", "C"])))
    df = pd.DataFrame({"patient_id": np.repeat(pids, 3)})
    a = split_patients(df, patient_sites=sites, test_site="B")
    assert_disjoint(a)
    per = a.groupby("patient_id")["split"].first()
    assert set(per[per == "test"].index) == {p for p, s in sites.items() if s == "B"}
    assert (per == "val").sum() == 6 and (per == "train").sum() == 14  # 25% of each training site's 10, rounded up
    assert a["split"].equals(split_patients(df, patient_sites=sites, test_site="B")["split"])
    assert not a["split"].equals(split_patients(df, seed=1, patient_sites=sites, test_site="B")["split"])


@pytest.mark.parametrize("overrides,match", [
    (["data.sites=[{name: A}, {name: B}]", "data.test_site=D"], r"data.test_site=D is not a site of data.sites \(A, B\)"),
    (["data.test_site=A"], "data.test_site=A needs data.sites"),
    (["data.sites=[{name: A}, {name: A}]"], "every site needs its own name"),
])
def test_a_bad_site_config_is_one_line(tmp_path, caplog, overrides, match):
    msg = stage_error("prepare_data", compose_cfg(tmp_path, *overrides), caplog)
    assert re.search(match, msg), msg
    with pytest.raises(ConfigError, match=match):
        manifest_for(compose_cfg(tmp_path, *overrides).data)


def test_site_shift_table_reads_each_runs_remedy_and_resamples_patients(tmp_path):
    """A perfectly ranked test split: ROC-AUC 1 and every patient-bootstrap replicate 1; the remedy columns come
    from the run's train record, the tested site from its summary."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "data").mkdir()
    (run / ".stages").mkdir()
    pred = pd.DataFrame({"patient_id": np.repeat([1, 2, 3], 4), "target": [0, 1] * 6, "proba": [0.2, 0.9] * 6})
    pred.to_csv(run / "eval" / "predictions.csv", index=False)
    (run / "data" / "summary.json").write_text(json.dumps({"site_shift": {"test_site": "C", "sites": {}}}))
    (run / ".stages" / "train.json").write_text(json.dumps({"config": {
        "data.stain_normalize": None, "train": {"augment": {"hed_scale": 0.05, "hed_shift": 0.05}}}}))
    table = site_shift_table({"HED-light": run}, n_boot=50)
    assert "| HED-light | test split: site C (unseen) | off | 0.05 / 0.05 | 3 / 12 (6) | 1.000 [1.000, 1.000] | 1.000 | |" in table


def test_paired_difference_is_exact_on_shared_patches_and_refuses_others():
    """Model b ranks perfectly; model a swaps one patient's pair: the difference is 1 minus a's ROC-AUC, every
    replicate resamples the same patients for both (so it is never negative); other patches: None."""
    pred = pd.DataFrame({"image_id": [f"p{i}" for i in range(12)], "patient_id": np.repeat([1, 2, 3], 4),
                         "target": [0, 1] * 6, "proba": [0.2, 0.9] * 6})
    worse = pred.assign(proba=[0.9, 0.2, 0.9, 0.2] + [0.2, 0.9] * 4)
    diff, low, high = paired_difference(worse, pred, n_boot=200)
    assert diff == pytest.approx(1 - roc_auc_score(worse["target"], worse["proba"])) and 0 <= low <= diff <= high
    assert paired_difference(pred, pred, n_boot=50) == (0.0, 0.0, 0.0)
    assert paired_difference(pred, pred.iloc[:8], n_boot=50) is None


def test_sign_test_counts_patients_and_leaves_ties_out():
    """Patient 1: b ranks right, a wrong (+1); patients 2 and 3: both right (ties, left out). Ten patients all
    higher: p = 2 / 2**10, the exact two-sided sign test."""
    pred = pd.DataFrame({"image_id": [f"p{i}" for i in range(12)], "patient_id": np.repeat([1, 2, 3], 4),
                         "target": [0, 1] * 6, "proba": [0.2, 0.9] * 6})
    worse = pred.assign(proba=[0.9, 0.2, 0.9, 0.2] + [0.2, 0.9] * 4)
    assert sign_test(worse, pred) == (1, 1, 1.0, 0.0)  # median over the 3 patients: 0 (two ties)
    assert sign_test(worse, pred.iloc[:8]) is None
    ten = pd.DataFrame({"image_id": [f"q{i}" for i in range(40)], "patient_id": np.repeat(np.arange(10), 4),
                        "target": [0, 1] * 20, "proba": [0.2, 0.9] * 20})
    wrong = ten.assign(proba=[0.9, 0.2] * 20)
    higher, compared, p, median = sign_test(wrong, ten)
    assert (higher, compared, median) == (10, 10, 1.0) and p == pytest.approx(2 / 2 ** 10)
