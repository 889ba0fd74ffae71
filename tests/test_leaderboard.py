"""Leaderboard: primary scores, Holm-corrected control verdicts on hand-built scores, and the stage on the tiny run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from idc.errors import ConfigError
from idc.leaderboard import board as lb
from idc.leaderboard import stage
from idc.leaderboard import verdicts as lv
from idc.leaderboard.scoring import score_source, summarize
from idc.leaderboard.sources import RANDOMIZED_SUFFIX, MapSource, map_sources, parse_variant
from tests.helpers import compose_cfg, copy_run


def fake_scores(rng, method_mean: float) -> pd.DataFrame:
    """Per-patch scores of one method, its randomized-model row and a control over 12 patients x 4 patches."""
    frames = []
    for name, kind, mean in (("M", "method", method_mean), ("M" + RANDOMIZED_SUFFIX, "randomized", 0.5),
                             ("C", "control", 0.5)):
        frames.append(pd.DataFrame(dict(
            method=name, kind=kind, variant="positive", image_id=[f"p{i}" for i in range(48)],
            patient_id=np.repeat(np.arange(12), 4), relevance_rank=mean + rng.normal(0, 0.05, 48))))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("mean, verdict", [(0.8, "yes"), (0.5, "no (not beaten: C, own [randomized model])")])
def test_beats_every_control_needs_every_holm_corrected_test(mean, verdict):
    pp = fake_scores(np.random.default_rng(0), mean)
    kinds = dict(zip(pp["method"], pp["kind"]))
    assert lv.controls_of("M", kinds) == ["C", "M" + RANDOMIZED_SUFFIX]
    tests = lv.question_tests(pp, kinds, "localization", "relevance_rank")
    assert list(tests.columns) == lv.TEST_COLUMNS and len(tests) == 2 and (tests["n_patients"] == 12).all()
    np.testing.assert_array_equal(tests["beaten"], lv.holm(tests["p"], 0.025))
    assert lv.method_verdicts(tests) == {"M": verdict}


def test_holm_runs_across_methods_and_controls():
    """Eight methods, each above the control with a one-sided p of exactly 0.01 (12 patients): uncorrected every
    one would win; Holm over the 8 tests (0.025 / 8 for the smallest) leaves none. Two such methods with p =
    0.001: Holm keeps both (0.001 <= 0.025 / 8, then <= 0.025 / 7)."""
    z = np.tile([-1.0, 1.0], 6) * np.sqrt(11 / 12)  # per-patient deviations: mean 0, sd 1
    t = 2.718  # t_11 quantile 0.99: a one-sided p of 0.01 when mean / (sd / sqrt(12)) = t

    def board(ts):
        patients = np.repeat(np.arange(12), 4)
        frames = [pd.DataFrame(dict(method="C", kind="control", image_id=np.arange(48), patient_id=patients,
                                    relevance_rank=0.5))]
        for i, ti in enumerate(ts):
            diff = ti * 0.05 / np.sqrt(12) + 0.05 * z[patients]
            frames.append(pd.DataFrame(dict(method=f"M{i}", kind="method", image_id=np.arange(48), patient_id=patients,
                                            relevance_rank=0.5 + diff)))
        pp = pd.concat(frames, ignore_index=True)
        return lv.question_tests(pp, dict(zip(pp["method"], pp["kind"])), "localization", "relevance_rank")

    tests = board([t] * 8)
    assert np.allclose(tests["p"], 0.01, atol=1e-4) and not tests["beaten"].any()
    assert set(lv.method_verdicts(tests).values()) == {"no (not beaten: C)"}
    strong = board([4.437] * 2 + [t] * 6)  # t_11 quantile 0.999
    assert strong["beaten"].tolist() == [True, True] + [False] * 6


def test_primary_scores_are_declared_in_one_place():
    assert lv.primary_scores(["relevance_rank", "pixel_auroc", "deletion", "insertion"]) == {
        "localization": "relevance_rank", "faithfulness": "deletion"}  # a hand-made evidence mask
    assert lv.primary_scores(["deletion", "insertion"]) == {"faithfulness": "deletion"}  # no masks
    # a label map: its headline score goes first, and the model's own per-nucleus drops are a question of their own
    assert lv.primary_scores(["nuclear_auroc", "nuclear_mass", "relevance_rank", "deletion", "nucleus_rank"]) == {
        "localization": "nuclear_auroc", "faithfulness": "deletion", "model's nuclei": "nucleus_rank"}


def test_too_few_patients_gives_no_verdict(tmp_path):
    cfg = compose_cfg(tmp_path)
    pp = fake_scores(np.random.default_rng(0), 0.8)
    board, tests, agree = lb.build_leaderboard(cfg.leaderboard, pp, summarize(pp), None)
    col = "localization: beats every control"
    assert board.set_index("row").at["M", col] == "yes" and len(tests) == 2
    assert board.set_index("row").at["M", "localization rank [95% CI]"] == "1 [1, 1]"
    assert agree["score"].tolist() == ["relevance_rank"] and np.isnan(agree["alpha"].iloc[0])  # one method: no ranking
    few = pp.assign(patient_id=pp["patient_id"] % 4)  # the same scores from 4 patients: no verdict either way
    board, _, _ = lb.build_leaderboard(cfg.leaderboard, few, summarize(few), None)
    assert board.set_index("row").at["M", col] == "too few patients (4 < 5)"
    facts = dict(data_name="tiny", cohort="the test split", n=48, n_patients=4, superpixel_sizes={}, agreement=agree,
                 chance={}, pairs=2)
    md = lb.markdown(board, cfg.leaderboard, facts)
    assert "cannot be decided" in md and "Holm" in md and "**localization**" not in md


def test_unverified_evidence_replaces_the_localization_verdicts_only(tmp_path):
    """The label map's evidence check failed: every localization verdict reads the reason, not yes / no; the
    other questions keep theirs."""
    cfg = compose_cfg(tmp_path)
    pp = fake_scores(np.random.default_rng(0), 0.8)
    pp = pp.assign(deletion=1 - pp["relevance_rank"])
    invalid = "invalid: the model does not rely on the marked evidence"
    board, _, _ = lb.build_leaderboard(cfg.leaderboard, pp, summarize(pp), None, evidence=invalid)
    row = board.set_index("row").loc["M"]
    assert row["localization: beats every control"] == invalid and row["faithfulness: beats every control"] == "yes"
    assert board.attrs["sort"] == "relevance_rank"  # leaderboard.sort=primary: the localization primary score
    lines = lb.verdict_lines(board, board.attrs["primary"], 12, invalid)
    assert lines[0].endswith(f"no verdict, {invalid} (the counterfactual check below).") and "M beats" in lines[1]


def test_summary_has_patient_cis_and_counts_empty_maps():
    pp = fake_scores(np.random.default_rng(0), 0.8).assign(pixel_auroc=0.5, empty_map=0.0)
    pp.loc[:3, "empty_map"] = 1.0
    table = summarize(pp)
    row = table.set_index("method").loc["M"]
    assert row["relevance_rank_ci_low"] < row["relevance_rank"] < row["relevance_rank_ci_high"]
    assert (row["n"], row["n_patients"], row["n_empty"], row["relevance_rank_k"]) == (48, 12, 4, 12)
    assert lb.cell(0.5, 0.4, 0.6) == "0.50 [0.40, 0.60]" and lb.cell(0.5, 0.4, 0.6, "32/20") == "0.50 [0.40, 0.60] (n 32/20)"


def test_variants_parse_and_reject_unknown_keys():
    assert parse_variant("gradcam:cam_layer=layer3") == ("gradcam", (("cam_layer", "layer3"),))
    # keys of explain the method does not read, no override, no value, a value of the wrong type
    for bad in ("gradcam:cam_layr=layer3", "gradcam:lime_kernel_size=2", "gradcam", "gradcam:cam_layer",
                "lime:lime_kernel_size=big"):
        with pytest.raises(ConfigError, match="leaderboard.variants"):
            parse_variant(bad)
    # a variant is an argument override: explain.<key> -> the method's keyword argument, typed by the schema
    assert MapSource("LIME (lime_kernel_size=2)", "method", "lime", (("lime_kernel_size", "2"),)).arguments() \
        == {"kernel_size": 2.0}
    kinds = [(s.title, s.kind) for s in map_sources(["gradcam"], ["gradcam:cam_layer=layer3"], True)]
    assert kinds[:4] == [("Grad-CAM", "method"), ("Grad-CAM (cam_layer=layer3)", "method"),
                         ("Grad-CAM" + RANDOMIZED_SUFFIX, "randomized"),
                         ("Grad-CAM (cam_layer=layer3)" + RANDOMIZED_SUFFIX, "randomized")]
    assert [k for _, k in kinds[4:]] == ["control"] * 3


def test_unknown_sort_or_variant_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="leaderboard.sort one of"):  # no run dir, no model: nothing was read
        stage.run(compose_cfg(tmp_path, "leaderboard.sort=pointing"))


def test_randomization_cells_read_the_sanity_csv_or_say_not_run():
    rand = pd.DataFrame(dict(method=["gradcam"], test=["smprt"], value=[0.2], ci_low=[0.1], ci_high=[0.3],
                             n=[8], n_patients=[8], n_degenerate=[0], verdict=["pass"]))
    cells = lb.randomization_cells(rand, ["Grad-CAM", "gradcam"])
    assert cells["sMPRT"] == "pass (0.20 [0.10, 0.30] (n 8/8))" and cells["eMPRT"] == "not run"
    assert set(lb.randomization_cells(None, ["gradcam"]).values()) == {"not run"}


@pytest.mark.slow
def test_leaderboard_stage_on_the_tiny_run(tiny_evaluated, tiny_data_dir, tmp_path):
    """The tiny set's sidecars carry a label map (generator v7): nuclear AUROC is the localization primary score,
    darkness blurred to a nucleus a control row, the counterfactual evidence check gates the localization verdicts,
    and the per-nucleus drops give a third question (on `nucleus_patches` patches)."""
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "leaderboard.methods=[gradcam,vanilla_backprop]",
                      'leaderboard.variants=["gradcam:cam_layer=layer3"]', "leaderboard.bootstrap=50",
                      "leaderboard.road=false", "leaderboard.num_patches=10", "leaderboard.nucleus_patches=5",
                      "leaderboard.stain_patches=64", data_dir=tiny_data_dir)
    stage.run(cfg)
    md = (run_dir / "sanity" / "leaderboard.md").read_text()
    board = pd.read_csv(run_dir / "sanity" / "leaderboard.csv").set_index("row")
    assert len(board) == 3 * 2 + 4  # 3 method rows, their randomized rows, 4 controls
    assert board.at["control: image darkness blurred (sigma 2 px)", "kind"] == "control"
    assert "Grad-CAM (cam_layer=layer3)" in md and "not run" in md and "beats every control" in md
    # the tiny set's 5 generated cohort patients (never trained on), one patch each per round: a verdict
    assert "10 IDC-positive patches from 5 patients of the generated cohort (never trained on)" in md and (board["n (patches/patients)"] == "10/5").all()
    headline, nuclei = "nuclear AUROC (IDC vs decoy nuclei) (primary)", "nucleus rank correlation (model's drops) (primary)"
    assert {headline, nuclei, "relevance mass on IDC vs decoy nuclei", "relevance rank", "pixel AUROC"} <= set(board.columns)
    assert board[nuclei].str.endswith("(n 5/5)").all()  # drops on nucleus_patches=5 patches of 10: the cell says so
    tests = pd.read_csv(run_dir / "sanity" / "leaderboard_tests.csv")
    assert len(tests) == 3 * 3 * 5 and set(tests["score"]) == {"nuclear_auroc", "deletion", "nucleus_rank"}  # 3 questions x 3 x 5
    assert "of the question (15 tests)" in md  # Holm's family is one question's 3 methods x 5 controls
    # the evidence check: verified only with >= 5 patients and both lower CI ends above 0; else no localization verdict
    cf = pd.read_csv(run_dir / "sanity" / "counterfactuals.csv").set_index("row")
    diff, idc = cf.loc["difference: IDC drop - decoy drop"], cf.loc["drop: every IDC nucleus removed"]
    paste = cf.loc["difference: IDC drop - equal-area tissue drop"]
    assert len(cf) == 7 and (cf["n_patients"] == 5).all() and (cf["n"] <= 10).all()
    verified = diff["n_patients"] >= 5 and diff["ci_low"] > 0 and idc["ci_low"] > 0 and paste["ci_low"] > 0
    local = board.loc[board["kind"] == "method", "localization: beats every control"]
    if verified:
        assert local.map(lambda v: v == "yes" or v.startswith("no (not beaten")).all(), local
    else:
        assert (local == "invalid: the model does not rely on the marked evidence").all(), local
    assert ("**Evidence: verified" in md) == verified and "Does the model rely on the marked evidence?" in md
    # stain invariance (secondary, with its flag): every row on the 10 pairs (leaderboard.stain_patches=64 >= 10;
    # off by default)
    stain = lb.SCORE_TITLES["stain_invariance"]
    assert stain in board and lb.STAIN_FLAG in board and "**Stain invariance** (secondary" in md
    flags = board.loc[board["kind"] == "method", lb.STAIN_FLAG]
    assert flags.map(lambda v: v.startswith(("yes (", "no ("))).all(), flags
    assert (board.loc[board["kind"] != "method", lb.STAIN_FLAG] == "-").all()
    inv = board[stain].astype(str).str.split(" ").str[0].astype(float)
    assert abs(inv["control: uniform random map"]) < 0.1 < inv["control: image darkness"]  # redrawn: the floor
    own = board.loc[board["kind"] == "method", "model's nuclei: beats every control"]  # not gated by the check
    assert own.map(lambda v: v == "yes" or v.startswith("no (not beaten")).all(), own
    drops = pd.read_csv(run_dir / "sanity" / "nucleus_drops.csv")
    assert drops["image_id"].nunique() == 5 and drops["drop"].notna().all() and "idc" in set(drops["kind"])
    assert "Krippendorff" in md and "Chance levels: pointing game" in md and "relevance mass on IDC vs decoy nuclei 0." in md
    assert (run_dir / "figures" / "chapter_05_method_leaderboard.png").stat().st_size > 1000
    per_patch = pd.read_csv(run_dir / "sanity" / "localization.csv")
    assert set(per_patch["variant"]) == {"positive", "absolute"}
    assert per_patch.loc[per_patch["variant"] == "positive", "deletion"].notna().all()
    kept = per_patch["stain_delta_p"] <= 0.05  # leaderboard.stain_max_change: the pairs scored, the rest NaN
    assert kept.any() and per_patch["stain_invariance"].notna().eq(kept).all()
    timing = json.loads((run_dir / "sanity" / "leaderboard_timing.json").read_text())  # read by `make bench`
    phases = {k: v for k, v in timing.items() if k not in ("total", "network_images")}
    assert {"maps: Grad-CAM", "maps: control: image darkness", "deletion and insertion (2 starts)", "counterfactuals",
            "per-nucleus drops", "stain-perturbed copies", "stain-perturbed maps: Grad-CAM"} <= set(phases)
    assert "ROAD" not in phases and sum(phases.values()) <= timing["total"] + 0.5
    assert timing["network_images"]["images"] > timing["network_images"]["with_grad"] > 0


@pytest.mark.slow
def test_leaderboard_without_masks_scores_faithfulness_only(tiny_evaluated, tiny_data_dir, tmp_path):
    """The real set has no pixel ground truth: deletion / insertion against the same controls, sorted by deletion."""
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    cfg = compose_cfg(run_dir, "leaderboard.methods=[vanilla_backprop]", "leaderboard.variants=[]",
                      "leaderboard.bootstrap=50", "leaderboard.road=false", "data.masks_dir=null", data_dir=tiny_data_dir)
    stage.run(cfg)
    board = pd.read_csv(run_dir / "sanity" / "leaderboard.csv")
    assert len(board) == 2 + 3  # the method, its randomized row, 3 controls
    primary = lb.SCORE_TITLES["deletion"] + " (primary)"
    assert primary in board and lb.SCORE_TITLES["insertion"] in board and lb.SCORE_TITLES["insertion_mean"] in board
    assert not any(lb.SCORE_TITLES[c] in board for c in ("pointing_game", "relevance_rank", "pixel_auroc"))
    assert "localization: beats every control" not in board and "faithfulness: beats every control" in board
    deletion = board[primary].astype(str).str.split(" ").str[0].astype(float)
    assert deletion.is_monotonic_increasing  # lower deletion AUC is better: best first
    md = (run_dir / "sanity" / "leaderboard.md").read_text()
    assert "no pixel ground truth" in md and "sorted by deletion AUC" in md
    per_patch = pd.read_csv(run_dir / "sanity" / "localization.csv")
    assert per_patch["mask_fraction"].isna().all() and per_patch["deletion"].notna().all()
    assert set(per_patch["variant"]) == {"positive"}  # the variant faithfulness is scored on
    # the stain column is off by default (leaderboard.stain_patches=0): no column, no flag, no stain phase
    assert "stain_invariance" not in per_patch or per_patch["stain_invariance"].isna().all()
    assert lb.STAIN_FLAG not in board and lb.SCORE_TITLES["stain_invariance"] not in board
    phases = json.loads((run_dir / "sanity" / "leaderboard_timing.json").read_text())
    assert not any("stain" in p for p in phases)
    assert "Faithfulness (no pixel ground truth)" in (run_dir / "sanity" / "localization.md").read_text()
    assert not (run_dir / "sanity" / "counterfactuals.csv").exists()  # no label map: no evidence check


def test_shortcut_mass_only_on_patches_that_carry_the_cue():
    from types import SimpleNamespace

    import torch

    s = SimpleNamespace(top_k_fraction=0.1, pointing_tolerance=0, deletion_fill="mean", blur_sigma=2.0,
                        road=False, road_patches=0, seed=0)
    masks = np.zeros((2, 10, 10), bool)
    masks[:, :5] = True  # evidence: top half
    cues = np.zeros((2, 10, 10), bool)
    cues[0, 8:, 8:] = True  # only patch 0 carries a 2x2 cue
    maps = np.zeros((2, 10, 10))
    maps[:, 8:, 8:] = 3.0  # all relevance on the cue corner ...
    maps[:, 0, :] = 0.1  # ... and a little on the evidence
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(300, 2))
    out = score_source(model, torch.zeros(2, 3, 10, 10), torch.ones(2, dtype=torch.long),
                       {"positive": maps, "absolute": maps}, masks, cues, s)
    pos = out["positive"]
    assert pos["cue_mass"][0] == pytest.approx(12 / 13) and np.isnan(pos["cue_mass"][1])
    assert pos["evidence_mass_cue_patches"][0] == pytest.approx(1 / 13)
    assert "cue_mass" not in out["absolute"] and "deletion" in pos


def test_counterfactual_table_and_its_section():
    """Known answer: 6 patients, one patch each with IDC and decoy nuclei (and one without, left out): drops
    0.3 (IDC), 0.1 (decoys) and -0.05 (tissue paste), differences 0.2 and 0.35, every patient alike
    (zero-width t-intervals): verified."""
    from idc.leaderboard.nuclei import NuclearTruth, counterfactual_table, evidence_markdown
    from idc.scores.nuclei import evidence_verification

    p, pid = np.full(7, 0.9), np.arange(7)
    patches = pd.DataFrame(dict(image_id=list("abcdefg"), patient_id=pid, p_as_is=p, p_no_idc=p - 0.3,
                                p_no_decoy=p - 0.1, p_tissue=p + 0.05, p_no_benign=p, idc_and_decoys=pid < 6))
    none = pd.DataFrame(columns=["image_id", "patient_id", "nucleus", "kind", "drop"])
    truth = NuclearTruth(None, None, [None] * 7, none, patches, evidence_verification(p[:6], p[:6] - 0.3, p[:6] - 0.1, pid[:6]))
    table = counterfactual_table(truth).set_index("row")
    np.testing.assert_allclose(table["mean"], [0.9, 0.3, 0.1, -0.05, 0.0, 0.2, 0.35], atol=1e-12)
    assert (table["n"] == 6).all() and (table["n_patients"] == 6).all()
    md = "\n".join(evidence_markdown(truth, table.reset_index()))
    assert "**Evidence: verified" in md and "| difference: IDC drop - decoy drop | 0.200 [0.200, 0.200] | 6 | 6 |" in md
    assert "Not measured (`leaderboard.nucleus_patches=0`)" in md
