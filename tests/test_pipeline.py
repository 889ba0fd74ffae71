"""The stage graph: a stage runs what it needs first, never recomputes what is up to date, and
refuses with run.auto=false; the registry is the one list of artifacts, figures and make targets."""
from __future__ import annotations

import logging
import re

import pytest

from idc import pipeline
from idc.explain.methods import METHODS
from idc.paths import ALL_FIGURES, ARTIFACTS, BY_KEY, FIGURES, MissingArtifactError, RunPaths, make_target, require
from idc.sanity.plots import FIGURE_NAMES
from tests.helpers import REPO, compose_cfg, copy_run

FAST = ["train.max_batches=2", "explain.methods=[gradcam]", "explain.visualize=false"]


def mtimes(run_dir, *rels):
    return {rel: (run_dir / rel).stat().st_mtime_ns for rel in rels}


def test_fresh_run_dir_chains_and_a_repeat_recomputes_nothing(tmp_path, tiny_data_dir, caplog):
    caplog.set_level(logging.INFO, logger="idc")
    run = tmp_path / "fresh"
    cfg = compose_cfg(run, *FAST, data_dir=tiny_data_dir)
    ran = pipeline.build("explain", cfg)
    assert list(ran) == ["prepare_data", "train", "evaluate", "explain"]
    assert (run / "explain" / "maps.npz").exists() and (run / "figures" / "chapter_05_grad_cam.png").exists()
    assert "running train (model/best.pt not found) before explain" in caplog.text
    before = mtimes(run, "data/patches.csv", "model/best.pt", "eval/predictions.csv", "explain/maps.npz")

    assert pipeline.build("explain", cfg) == {}  # the call log: nothing ran
    assert pipeline.build("train", cfg) == {}
    assert mtimes(run, *before) == before  # and nothing was rewritten

    # A config change that shapes the model re-runs train and everything after it, not prepare_data.
    caplog.clear()
    ran = pipeline.build("explain", compose_cfg(run, *FAST, "train.lr=0.001", data_dir=tiny_data_dir))
    assert list(ran) == ["train", "evaluate", "explain"]
    assert "train.lr was 0.002, is 0.001" in caplog.text
    assert mtimes(run, "data/patches.csv")["data/patches.csv"] == before["data/patches.csv"]


def test_retrained_model_makes_predictions_stale(tiny_evaluated, tiny_data_dir, tmp_path):
    from idc import landscape

    run = copy_run(tiny_evaluated, tmp_path / "retrained")
    old = (run / "model" / "best.pt").read_bytes()
    pipeline.build("train", compose_cfg(run, "train.max_batches=1", data_dir=tiny_data_dir))
    assert (run / "model" / "best.prev.pt").read_bytes() == old  # the model a retrain replaces is kept
    strict = compose_cfg(run, "train.max_batches=1", "run.auto=false", data_dir=tiny_data_dir)
    with pytest.raises(MissingArtifactError, match=r"model/best.pt changed .* Run `make evaluate`"):
        pipeline.build("landscape", strict)
    # called directly (outside the graph), the stage refuses the stale predictions too
    with pytest.raises(MissingArtifactError, match=r"predictions.csv is out of date: .*model/best.pt"):
        landscape.run(strict)
    ran = pipeline.build("landscape", compose_cfg(run, "train.max_batches=1", data_dir=tiny_data_dir))
    assert list(ran) == ["evaluate", "landscape"]


def test_auto_false_names_the_make_target_of_a_missing_input(tmp_path, tiny_data_dir):
    cfg = compose_cfg(tmp_path / "empty", "run.auto=false", data_dir=tiny_data_dir)
    with pytest.raises(MissingArtifactError, match=r"data/patches.csv not found.*Run `make data`"):
        pipeline.build("evaluate", cfg)


def test_force_reruns_only_the_requested_stage(tiny_evaluated, tiny_data_dir, tmp_path):
    run = copy_run(tiny_evaluated, tmp_path / "forced")
    assert list(pipeline.build("evaluate", compose_cfg(run, "run.force=true", data_dir=tiny_data_dir))) == ["evaluate"]


def test_registry_is_consistent_with_stages_make_and_figure_producers():
    stages = set(pipeline.STAGES)
    assert {a.stage for a in ARTIFACTS} <= stages and set(FIGURES.values()) <= stages
    for stage in pipeline.STAGES.values():  # inputs are declared artifacts, the graph has no cycle
        assert all(k in BY_KEY for k in stage.inputs)
    order, seen = [], set()

    def visit(name, path=()):
        assert name not in path, f"cycle {path + (name,)}"
        for dep in pipeline.producers(name):
            visit(dep, path + (name,))
        if name not in seen:
            seen.add(name), order.append(name)

    for name in pipeline.STAGES:
        visit(name)
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.search(r"^STAGES := (.*)$", makefile, re.M).group(1).split())
    targets |= set(re.findall(r"^([a-z_]+):", makefile, re.M))
    assert {make_target(name).split()[1] for name in pipeline.STAGES} <= targets  # every stage has its target
    assert set(FIGURE_NAMES.values()) <= {n for n, s in FIGURES.items() if s == "sanity"}
    # every method's figure is declared (the book's seven are required, the others optional), and the overview
    assert {m.figure for m in METHODS.values()} | {"explain_overview"} == {n for n, s in ALL_FIGURES.items() if s == "explain"}
    assert {m.figure for m in METHODS.values() if m.figure in FIGURES} | {"explain_overview"} == \
        {n for n, s in FIGURES.items() if s == "explain"}


def test_patterned_artifacts_and_figures_come_from_the_registry(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.path("landscape_png", pid=12930) == tmp_path / "figures" / "landscape_12930.png"
    assert paths.producer(tmp_path / "figures" / "landscape_12930.png") == "landscape"
    assert paths.producer(tmp_path / "explain" / "gradcam" / "000_7_tp.png") == "explain"
    assert paths.producer(tmp_path / "explain" / "visualize" / "filters_layer1.png") == "visualize"
    assert paths.producer(tmp_path / "viewer" / "assets" / "explain" / "0000_patch.png") == "view"
    assert paths.producer(tmp_path / "sanity" / "leaderboard.csv") == "leaderboard"
    assert paths.producer(tmp_path / "sanity" / "unknown.csv") is None
    with pytest.raises(KeyError, match="not declared"):
        paths.figure("chapter_05_not_a_figure")
    with pytest.raises(AttributeError, match="a pattern"):
        paths.landscape_png


def test_require_names_the_producing_stage(tmp_path):
    paths = RunPaths(tmp_path)
    with pytest.raises(MissingArtifactError, match=r"written by the evaluate stage: run `make evaluate`"):
        require(paths.predictions_csv)
    with pytest.raises(MissingArtifactError, match=r"written by the landscape stage: run `make landscape`"):
        require(paths.figure("chapter_05_patient1_breast_tissue_proba"))
    with pytest.raises(MissingArtifactError, match=r"written by the prepare_data stage: run `make data`"):
        require(paths.patches_csv)
