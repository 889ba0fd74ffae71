"""The artifact registry: every file a stage writes under ``run.dir``, declared once with its producer.

Stages never pass data in memory; they agree on these paths. `RunPaths` gives each artifact as an
attribute (``paths.predictions_csv``); the producers map, each stage's inputs (`idc.pipeline`), the
figure lists (`idc.figures`) and the report's sections (`idc.report`) are derived from `ARTIFACTS`
and `FIGURES` below. `require` turns a missing input into one clear error naming its producer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List


class MissingArtifactError(FileNotFoundError):
    """An input artifact of a stage does not exist yet (or is out of date and run.auto=false)."""


# The make target of each stage (the Makefile has one target per stage; prepare_data is `make data`).
MAKE_TARGETS = {"prepare_data": "make data"}


def make_target(stage: str) -> str:
    return MAKE_TARGETS.get(stage, f"make {stage}")


@dataclass(frozen=True)
class Artifact:
    key: str  # attribute of RunPaths
    rel: str  # path relative to run.dir
    stage: str  # the stage that writes it
    core: bool = True  # a stage is done only when all its core artifacts exist (directories are not core)


ARTIFACTS: List[Artifact] = [
    # prepare_data
    Artifact("data_dir", "data", "prepare_data", core=False),
    Artifact("patches_csv", "data/patches.csv", "prepare_data"),
    Artifact("summary_json", "data/summary.json", "prepare_data"),
    Artifact("cache_dir", "data/cache", "prepare_data", core=False),
    # train
    Artifact("model_dir", "model", "train", core=False),
    Artifact("best_pt", "model/best.pt", "train"),
    Artifact("last_pt", "model/last.pt", "train"),
    Artifact("history_csv", "model/history.csv", "train"),
    Artifact("history_steps_csv", "model/history_steps.csv", "train"),
    # evaluate
    Artifact("eval_dir", "eval", "evaluate", core=False),
    Artifact("predictions_csv", "eval/predictions.csv", "evaluate"),
    Artifact("metrics_json", "eval/metrics.json", "evaluate"),
    Artifact("table_5_1", "eval/table_5_1.md", "evaluate"),
    # explain
    Artifact("explain_dir", "explain", "explain", core=False),
    Artifact("maps_npz", "explain/maps.npz", "explain"),
    Artifact("explain_index_csv", "explain/index.csv", "explain"),
    # sanity
    Artifact("sanity_dir", "sanity", "sanity", core=False),
    Artifact("sanity_metrics_csv", "sanity/metrics.csv", "sanity"),
    Artifact("table_5_2", "sanity/table_5_2.md", "sanity"),
    Artifact("randomization_csv", "sanity/randomization.csv", "sanity"),  # verdicts (docs/sanity.md)
    # leaderboard: localization, faithfulness and shortcut scores (issue 15), after the sanity checks
    Artifact("localization_md", "sanity/localization.md", "leaderboard"),  # says "no masks" on real data
    Artifact("leaderboard_md", "sanity/leaderboard.md", "leaderboard", core=False),  # data with masks only
    # figures (every stage's book figures land in this folder) and report
    Artifact("figures_dir", "figures", "figures", core=False),
    Artifact("figure_index_md", "figures/index.md", "figures"),
    Artifact("report_html", "report.html", "report"),
    # view: the interactive page and its per-patient / per-patch assets
    Artifact("viewer_dir", "viewer", "view", core=False),
    Artifact("viewer_html", "viewer/index.html", "view"),
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
    "sanity_cascading_randomization": "sanity",
    "sanity_independent_randomization": "sanity",
    "sanity_randomization_examples": "sanity",
}
BOOK_FIGURES = {name: stage for name, stage in FIGURES.items() if name.startswith("chapter_05_")}
OUR_FIGURES = {name: stage for name, stage in FIGURES.items() if name not in BOOK_FIGURES}
# Drawn only on some runs (pixel ground truth exists for synthetic data only): never required.
OPTIONAL_FIGURES: Dict[str, str] = {"sanity_localization_examples": "leaderboard", "chapter_05_method_leaderboard": "leaderboard"}

BY_KEY: Dict[str, Artifact] = {a.key: a for a in ARTIFACTS}
PRODUCERS: Dict[str, str] = {a.rel: a.stage for a in ARTIFACTS}


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
        if key in BY_KEY:
            return self.root / BY_KEY[key].rel
        raise AttributeError(f"RunPaths has no artifact {key!r}; declare it in idc.paths.ARTIFACTS")

    def figure(self, name: str) -> Path:
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
        if rel in PRODUCERS:
            return PRODUCERS[rel]
        if rel.startswith("figures/") and rel.endswith(".png"):
            return {**FIGURES, **OPTIONAL_FIGURES}.get(rel[len("figures/"):-len(".png")])
        return None


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
    top = {a.rel.split("/")[0] for a in ARTIFACTS if "/" in a.rel}
    return next((p.parent for p in path.parents if p.name in top), path.parent)


def producer_of(path: Path, root: Path | None = None) -> str | None:
    """The stage that writes `path` (`root`: its run dir; guessed from the path when not given), if declared."""
    return RunPaths(Path(root) if root is not None else _guess_root(Path(path))).producer(path)
