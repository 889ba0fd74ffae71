"""The artifact registry: every file a stage writes under ``run.dir``, declared once with its producer.

Stages never pass data in memory; they agree on these paths. `RunPaths` gives each artifact as an
attribute (``paths.predictions_csv``), a patterned one through `paths.path(key, pid=...)` and a figure
through `paths.figure(name)` (an undeclared name is an error); the producers map, each stage's inputs
(`idc.pipeline`), the figure lists (`idc.figures`), the report's sections (`idc.report`) and the viewer's
notes are derived from `ARTIFACTS` and `FIGURES` below. `require` turns a missing input into one clear
error naming its producer. Besides these, a run dir holds only Hydra's `logs/` and the stage records
`.stages/` (a test runs every stage and checks that nothing else appears).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional


class MissingArtifactError(FileNotFoundError):
    """An input artifact of a stage does not exist yet (or is out of date and run.auto=false)."""


# The make target of each stage (the Makefile has one target per stage; prepare_data is `make data`).
MAKE_TARGETS = {"prepare_data": "make data"}


def make_target(stage: str) -> str:
    return MAKE_TARGETS.get(stage, f"make {stage}")


@dataclass(frozen=True)
class Artifact:
    key: str  # attribute of RunPaths
    rel: str  # path relative to run.dir; `{name}` fields make a pattern (e.g. figures/landscape_{pid}.png)
    stage: str  # the stage that writes it
    core: bool = True  # a stage is done only when all its core artifacts exist (directories are not core)
    tracked: bool = True  # False: a kept copy (model/best.prev.pt) that the stage records do not follow

    @property
    def pattern(self) -> bool:
        return "{" in self.rel


ARTIFACTS: List[Artifact] = [
    # prepare_data
    Artifact("data_dir", "data", "prepare_data", core=False),
    Artifact("patches_csv", "data/patches.csv", "prepare_data"),
    Artifact("summary_json", "data/summary.json", "prepare_data"),
    Artifact("cache_dir", "data/cache", "prepare_data", core=False),
    Artifact("cache_npy", "data/cache/patches-{key}.npy", "prepare_data", core=False),  # idc.data.cache
    # data.stain_normalize: the reference patch of the training split and the fitted parameters (idc.data.stain)
    Artifact("stain_reference_json", "data/cache/stain_reference.json", "prepare_data", core=False),
    Artifact("stain_reference_png", "data/cache/stain_reference.png", "prepare_data", core=False),
    # the evaluation cohort of sanity and leaderboard (idc.data.cohort): generated patients or the test split
    Artifact("cohort_csv", "data/cohort.csv", "prepare_data"),
    Artifact("cohort_cache_dir", "data/cohort_cache", "prepare_data", core=False),
    Artifact("cohort_cache_npy", "data/cohort_cache/patches-{key}.npy", "prepare_data", core=False),
    # train
    Artifact("model_dir", "model", "train", core=False),
    Artifact("best_pt", "model/best.pt", "train"),
    Artifact("last_pt", "model/last.pt", "train"),
    Artifact("history_csv", "model/history.csv", "train"),
    Artifact("history_steps_csv", "model/history_steps.csv", "train"),
    Artifact("best_prev_pt", "model/best.prev.pt", "train", core=False, tracked=False),  # what a retrain replaced
    # train.logger=tensorboard (idc.tracking): one TensorBoard run per stage, event files named by TensorBoard
    Artifact("tensorboard_dir", "tensorboard", "train", core=False),
    Artifact("tensorboard_train", "tensorboard/train", "train", core=False),
    Artifact("tensorboard_train_events", "tensorboard/train/{name}", "train", core=False),
    # evaluate
    Artifact("eval_dir", "eval", "evaluate", core=False),
    Artifact("predictions_csv", "eval/predictions.csv", "evaluate"),
    Artifact("metrics_json", "eval/metrics.json", "evaluate"),
    Artifact("table_5_1", "eval/table_5_1.md", "evaluate"),
    Artifact("tensorboard_evaluate", "tensorboard/evaluate", "evaluate", core=False),
    Artifact("tensorboard_evaluate_events", "tensorboard/evaluate/{name}", "evaluate", core=False),
    # landscape: the k-th chosen patient under the book's name (k = 1, 2 are in FIGURES) and by patient id
    Artifact("landscape_book_png", "figures/chapter_05_patient{k}_breast_tissue_proba.png", "landscape", core=False),
    Artifact("landscape_png", "figures/landscape_{pid}.png", "landscape", core=False),
    Artifact("tensorboard_landscape", "tensorboard/landscape", "landscape", core=False),
    Artifact("tensorboard_landscape_events", "tensorboard/landscape/{name}", "landscape", core=False),
    # explain
    Artifact("explain_dir", "explain", "explain", core=False),
    Artifact("maps_npz", "explain/maps.npz", "explain"),
    Artifact("explain_index_csv", "explain/index.csv", "explain"),
    Artifact("method_dir", "explain/{method}", "explain", core=False),  # one grey PNG per patch
    Artifact("method_patch_png", "explain/{method}/{name}.png", "explain", core=False),
    Artifact("shards_dir", "explain/shards", "explain", core=False),  # explain.num_shards > 1
    Artifact("shard_file", "explain/shards/{shard}/{name}", "explain", core=False),
    # atlas: attribution landscapes, one shard per patient (idc.atlas), joined once every patient is done
    Artifact("atlas_dir", "atlas", "atlas", core=False),
    Artifact("atlas_index_csv", "atlas/index.csv", "atlas"),
    Artifact("atlas_summary_json", "atlas/summary.json", "atlas"),
    Artifact("atlas_patient_dir", "atlas/patients/{pid}", "atlas", core=False),
    Artifact("atlas_patient_file", "atlas/patients/{pid}/{name}", "atlas", core=False),  # maps.npz, index.csv, shard.json
    Artifact("atlas_overlay", "atlas/overlays/{pid}_{method}.jpg", "atlas", core=False),  # full resolution
    Artifact("atlas_png", "figures/atlas_{pid}.png", "atlas", core=False),
    # visualize (also drawn by `make explain` with explain.visualize=true)
    Artifact("visualize_dir", "explain/visualize", "visualize", core=False),
    Artifact("activations_png", "explain/visualize/activations.png", "visualize"),
    Artifact("filters_png", "explain/visualize/filters_{layer}.png", "visualize", core=False),
    Artifact("gradcam_overlay_png", "explain/visualize/gradcam_overlay.png", "visualize"),
    # sanity
    Artifact("sanity_dir", "sanity", "sanity", core=False),
    Artifact("sanity_metrics_csv", "sanity/metrics.csv", "sanity"),
    Artifact("table_5_2", "sanity/table_5_2.md", "sanity"),
    Artifact("randomization_csv", "sanity/randomization.csv", "sanity"),  # verdicts (docs/sanity.md)
    Artifact("logit_change_csv", "sanity/logit_change.csv", "sanity"),
    Artifact("sanity_timing_json", "sanity/timing.json", "sanity"),  # wall seconds per phase (make bench)
    Artifact("random_labels_json", "sanity/random_labels.json", "sanity"),  # the memorization record
    Artifact("random_labels_dir", "sanity/random_labels_model", "sanity", core=False),
    Artifact("random_labels_pt", "sanity/random_labels_model/model.pt", "sanity"),
    Artifact("recipe_control_json", "sanity/recipe_control.json", "sanity"),  # true labels, the memorization recipe
    Artifact("recipe_control_dir", "sanity/recipe_control_model", "sanity", core=False),
    Artifact("recipe_control_pt", "sanity/recipe_control_model/model.pt", "sanity"),
    # leaderboard: localization, faithfulness and shortcut scores (issue 15), after the sanity checks
    Artifact("localization_md", "sanity/localization.md", "leaderboard"),  # says why when skipped
    Artifact("localization_csv", "sanity/localization.csv", "leaderboard", core=False),  # per patch; not when skipped
    Artifact("localization_summary_csv", "sanity/localization_summary.csv", "leaderboard", core=False),
    Artifact("leaderboard_md", "sanity/leaderboard.md", "leaderboard", core=False),
    Artifact("leaderboard_csv", "sanity/leaderboard.csv", "leaderboard", core=False),
    Artifact("leaderboard_tests_csv", "sanity/leaderboard_tests.csv", "leaderboard", core=False),  # Holm-corrected
    Artifact("leaderboard_timing_json", "sanity/leaderboard_timing.json", "leaderboard", core=False),  # make bench
    # data with a label map only (generator v7; idc.leaderboard.nuclei): the evidence check and per-nucleus drops
    Artifact("counterfactuals_csv", "sanity/counterfactuals.csv", "leaderboard", core=False),
    Artifact("counterfactual_patches_csv", "sanity/counterfactual_patches.csv", "leaderboard", core=False),
    Artifact("nucleus_drops_csv", "sanity/nucleus_drops.csv", "leaderboard", core=False),
    # figures (every stage's book figures land in this folder) and report
    Artifact("figures_dir", "figures", "figures", core=False),
    Artifact("figure_index_md", "figures/index.md", "figures"),
    Artifact("report_html", "report.html", "report"),
    # view: the interactive page and its per-patient / per-patch assets
    Artifact("viewer_dir", "viewer", "view", core=False),
    Artifact("viewer_html", "viewer/index.html", "view"),
    Artifact("viewer_assets", "viewer/assets/{path}", "view", core=False),
]

# Every figure a complete run has under figures/, in the book's order, with the stage that draws it:
# the chapter's figures under the book's file names, then ours.
FIGURES: Dict[str, str] = {
    "chapter_05_target_pc": "prepare_data",
    "chapter_05_idc_positive_samples": "prepare_data",
    "chapter_05_idc_negative_samples": "prepare_data",
    "chapter_05_patient_tissue_slice": "prepare_data",
    "chapter_05_patient_patch_dist": "prepare_data",
    "chapter_05_train_val_test_splits": "prepare_data",
    "chapter_05_loss_curve_epoch": "evaluate",
    "chapter_05_loss_curve_step": "evaluate",
    "chapter_05_pr_curve": "evaluate",
    "chapter_05_patient1_breast_tissue_proba": "landscape",
    "chapter_05_patient2_breast_tissue_proba": "landscape",
    "chapter_05_lime_explanation": "explain",
    "chapter_05_vanilla_backprop": "explain",
    "chapter_05_guided_backprop": "explain",
    "chapter_05_integrated_gradients": "explain",
    "chapter_05_smooth_grad": "explain",
    "chapter_05_grad_cam": "explain",
    "chapter_05_guided_grad_cam": "explain",
    "explain_overview": "explain",
    "sanity_cascading_randomization": "sanity",
    "sanity_independent_randomization": "sanity",
    "sanity_randomization_examples": "sanity",
}
# Drawn only on some runs, never required: the non-book methods' figures (when in explain.methods), the
# leaderboard's (skipped with leaderboard.enabled=false) and the stain figure (with data.stain_normalize).
OPTIONAL_FIGURES: Dict[str, str] = {
    "stain_normalization": "prepare_data",  # the patches under each data.stain_normalize and HED jitter
    "site_shift": "prepare_data",  # patches of each site of a site-shift cohort (data.sites)
    "chapter_05_gradcam_pp": "explain",
    "chapter_05_score_cam": "explain",
    "chapter_05_layer_cam": "explain",
    "chapter_05_rise": "explain",
    "sanity_localization_examples": "leaderboard",
    "chapter_05_method_leaderboard": "leaderboard",
}
ALL_FIGURES: Dict[str, str] = {**FIGURES, **OPTIONAL_FIGURES}

BY_KEY: Dict[str, Artifact] = {a.key: a for a in ARTIFACTS}
PRODUCERS: Dict[str, str] = {a.rel: a.stage for a in ARTIFACTS if not a.pattern}


BY_REL: Dict[str, Artifact] = {a.rel: a for a in ARTIFACTS if not a.pattern}


def _regex(rel: str) -> "re.Pattern":
    """A pattern artifact's path as a regex: `{path}` matches the rest of a path, any other `{field}` one
    path component (no '/')."""
    return re.compile("".join((".+" if part == "{path}" else "[^/]+") if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{\w+\})", rel)) + "$")


# most specific first: fewer fields, then longer
PATTERNS = [(_regex(a.rel), a) for a in sorted((a for a in ARTIFACTS if a.pattern),
                                              key=lambda a: (a.rel.count("{"), -len(a.rel)))]


def declared(rel: str) -> Optional[Artifact]:
    """The artifact `rel` (relative to run.dir, '/'-separated) is, or matches as a pattern; None if undeclared."""
    return BY_REL.get(rel) or next((a for rx, a in PATTERNS if rx.match(rel)), None)


def file_name(key: str) -> str:
    """The file name of an artifact, for folders laid out like run.dir's (e.g. a second model dir)."""
    return Path(BY_KEY[key].rel).name


def stage_artifacts(stage: str, core_only: bool = True) -> List[Artifact]:
    return [a for a in ARTIFACTS if a.stage == stage and (a.core or not core_only)]


def stage_figures(stage: str) -> List[str]:
    return [name for name, s in FIGURES.items() if s == stage]


@dataclass(frozen=True)
class RunPaths:
    """Paths of one run directory; one attribute per entry of `ARTIFACTS` (added below)."""

    root: Path

    @classmethod
    def from_cfg(cls, cfg) -> "RunPaths":
        return cls(Path(str(cfg.run.dir)))

    def __getattr__(self, key: str) -> Path:  # only called for names that are not real attributes
        if key in BY_KEY and not BY_KEY[key].pattern:
            return self.root / BY_KEY[key].rel
        raise AttributeError(f"RunPaths has no artifact {key!r}; declare it in idc.paths.ARTIFACTS"
                             + (" (a pattern: use paths.path(key, field=...))" if key in BY_KEY else ""))

    def path(self, key: str, **fields) -> Path:
        """A pattern artifact's path, e.g. `paths.path("landscape_png", pid=12930)`."""
        return self.root / BY_KEY[key].rel.format(**fields)

    def figure(self, name: str) -> Path:
        """figures/<name>.png of a declared figure (`FIGURES` or `OPTIONAL_FIGURES`)."""
        if name not in ALL_FIGURES:
            raise KeyError(f"figure {name!r} is not declared; add it to idc.paths.FIGURES or OPTIONAL_FIGURES")
        return self.root / "figures" / f"{name}.png"

    @property
    def stamps_dir(self) -> Path:
        """Where `idc.pipeline` records how each stage's outputs were made (inputs' hashes, config)."""
        return self.root / ".stages"

    def producer(self, path: Path) -> str | None:
        """The stage that writes `path` (an artifact or a figure of this run dir), if declared."""
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        if rel.startswith("figures/") and rel.endswith(".png") and rel[len("figures/"):-len(".png")] in ALL_FIGURES:
            return ALL_FIGURES[rel[len("figures/"):-len(".png")]]
        artifact = declared(rel)
        return artifact.stage if artifact else None


def require(path: Path, what: str | None = None, root: Path | None = None) -> Path:
    """Return `path` if it exists, else raise an error naming the stage (and make target) that writes it."""
    path = Path(path)
    if path.exists():
        return path
    stage = RunPaths(Path(root) if root is not None else _guess_root(path)).producer(path)
    label = what or path.name
    if stage is None:
        raise MissingArtifactError(f"{label} not found at {path}; re-run the stage that writes it (see the README)")
    raise MissingArtifactError(
        f"{label} not found at {path}. It is written by the {stage} stage: run `{make_target(stage)}` "
        f"(or `python scripts/{stage}.py` with the same overrides, e.g. the same run.dir) first."
    )


def _guess_root(path: Path) -> Path:
    """The run dir holding `path`: the parent of its top-level artifact folder (data/, model/, ...)."""
    top = {a.rel.split("/")[0] for a in ARTIFACTS if "/" in a.rel and not a.rel.startswith("{")}
    return next((p.parent for p in path.parents if p.name in top), path.parent)


def producer_of(path: Path, root: Path | None = None) -> str | None:
    """The stage that writes `path` (`root`: its run dir; guessed from the path when not given), if declared."""
    return RunPaths(Path(root) if root is not None else _guess_root(Path(path))).producer(path)
