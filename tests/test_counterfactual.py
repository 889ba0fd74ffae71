"""The counterfactual renderer of the synthetic set (idc.data.counterfactual) on the tiny set: removing
nothing gives the patch PNG (and the cached model input) back exactly, removing one nucleus changes only
its footprint, the equal-area control removes no nucleus; counterfactual P(IDC) with the tiny model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idc.data.cells import DECOY_KINDS, IDC, KINDS, footprints
from idc.data.counterfactual import load_truths, model_view, remove_nuclei, replace_tissue
from idc.data.evidence import KIND_REMOVALS, counterfactual_probabilities, nucleus_drops, removal_probabilities, run as evidence_run
from idc.model import load_model, predict

IMAGES = "IDC_regular_ps50_idx5"


@pytest.fixture(scope="module")
def truths(tiny_prepared, tiny_data_dir):
    """Every edge patch and a spread of full patches of the tiny set, with their rows of patches.csv."""
    df = pd.read_csv(tiny_prepared / "data" / "patches.csv")
    edge = df[(df["width"] < 50) | (df["height"] < 50)]
    assert len(edge), "the tiny set has edge patches (its first patient is cut at the scan edge)"
    sub = pd.concat([edge.head(4), df[df["width"] == 50].iloc[::40]])
    return sub, load_truths(sub, tiny_data_dir / IMAGES, tiny_data_dir / "masks")


def test_removing_nothing_reproduces_the_png_and_the_cached_input(truths, tiny_prepared):
    sub, ts = truths
    cache = np.load(next((tiny_prepared / "data" / "cache").glob("*.npy")), mmap_mode="r")
    for i, t in zip(sub.index, ts):
        same = remove_nuclei(t, [])
        np.testing.assert_array_equal(same, t.image)
        np.testing.assert_array_equal(model_view(same), cache[i])  # edge patches: stretched like the cache


def test_removing_one_nucleus_changes_only_its_footprint(truths):
    _, ts = truths
    brightened = []
    for t in ts:
        np.testing.assert_array_equal(remove_nuclei(t, t.nuclei()), t.free)  # all removed: the nucleus-free rendering
        assert ((t.image != t.free).any(-1) <= (t.footprint > 0)).all()  # the renderings differ only in footprints
        for i in t.nuclei()[:: max(len(t.nuclei()) // 5, 1)]:
            out = remove_nuclei(t, [i])
            changed = (out != t.image).any(-1)
            assert not (changed & (t.footprint != i)).any()
            nucleus = t.ids == i
            if nucleus.any():
                brightened.append(out[nucleus].mean() - t.image[nucleus].mean())
    assert len(brightened) > 10 and np.mean(brightened) > 30  # the nucleus is gone, not just touched


def test_footprints_partition_the_blur_reach_by_nearness():
    ids = np.zeros((7, 9), np.int32)
    ids[3, 1], ids[3, 6] = 4, 9
    f = footprints(ids, reach=2)
    assert (f[1:6, :4] == 4).all() and (f[1:6, 4:] == 9).all()  # chessboard reach 2 around each, split by nearness
    assert (f[[0, 6]] == 0).all()
    assert footprints(np.zeros((3, 3), np.int32)).sum() == 0


def test_equal_area_control_removes_no_nucleus(truths):
    _, ts = truths
    rng = np.random.default_rng(0)
    asked = placed = 0
    for t in ts:
        idc = t.nuclei((IDC,))
        out, area = replace_tissue(t, idc, rng)
        changed = (out != t.image).any(-1)
        assert not (changed & ((t.ids > 0) | ~t.tissue)).any()  # only non-nuclear tissue is touched
        assert changed.sum() <= area
        asked += int(np.isin(t.footprint, idc).sum())
        placed += area
    assert asked > 0 and placed >= 0.8 * asked  # almost every footprint finds a place


def test_counterfactual_probabilities_match_the_evaluated_model(tiny_evaluated, tiny_data_dir):
    preds = pd.read_csv(tiny_evaluated / "eval" / "predictions.csv").head(6)
    ts = load_truths(preds, tiny_data_dir / IMAGES, tiny_data_dir / "masks")
    model, _ = load_model(tiny_evaluated / "model" / "best.pt")
    cf = counterfactual_probabilities(model, ts)
    np.testing.assert_allclose(cf["p_as_is"], preds["proba"], atol=1e-5)
    assert cf.filter(like="p_").apply(lambda c: c.between(0, 1).all()).all()
    by_kind = removal_probabilities(model, ts, KIND_REMOVALS, cf["p_as_is"])
    assert list(by_kind) == [f"p_no_{KINDS[k]}" for k in DECOY_KINDS]
    has = np.array([[len(t.nuclei((k,))) > 0 for k in DECOY_KINDS] for t in ts])
    assert has.any() and not has.all()  # some patches hold a kind, some do not
    for j, (column, k) in enumerate(zip(by_kind, DECOY_KINDS)):
        # a patch without the kind keeps its pixels, so its P(IDC); one with it is the removed image's P(IDC)
        np.testing.assert_allclose(by_kind[column][~has[:, j]], cf["p_as_is"][~has[:, j]], atol=1e-5)
        direct = predict(model, np.stack([model_view(remove_nuclei(t, t.nuclei((k,)))) for t, h in zip(ts, has[:, j]) if h]))
        np.testing.assert_allclose(by_kind[column][has[:, j]], direct[:, 1], atol=1e-5)
    drops = nucleus_drops(model, ts[0])
    assert len(drops) == len(np.unique(ts[0].ids[ts[0].ids > 0])) and np.isfinite(drops["drop"]).all()


def test_evidence_report_on_the_tiny_run(tiny_evaluated, tiny_data_dir):
    out = evidence_run(tiny_evaluated, tiny_data_dir, nuclei=1)
    assert out["patches"] > 0 and out["verdict"].startswith(("verified", "invalid", "too few patients"))
    cf = {r["row"]: r for r in out["counterfactuals"]}
    if cf["difference"]["patients"] < 5:  # a verdict needs 5 patients (t-interval on the patient means)
        assert out["verdict"].startswith("too few patients")
    rows = {r["row"]: r for r in out["controls"]}
    assert {"control: image darkness: nuclear AUROC", "control: edge map |x - blur(x)|: relevance rank"} <= set(rows)
    assert len(out["nucleus_controls"]) == 4
    kinds = {r["row"]: r for r in out["decoy_kinds"]}
    assert set(kinds) == {f"drop: {KINDS[k]} removed" for k in DECOY_KINDS}
    assert all(r["n"] == out["patches"] and -1 <= r["mean"] <= 1 for r in kinds.values())
    decoys = {r["row"]: r["mean"] for r in out["decoys"]}
    assert 0 < decoys["IDC-positive: decoy share of the nuclear area"] < 1
    assert decoys["negative: decoy nuclei per 1,000 tissue pixels"] > 0
