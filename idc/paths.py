"""File names of the artifact contract: every stage reads and writes files under ``run.dir``.

Stages never pass data in memory; they agree on these paths. `require` turns a missing input into
one clear error that names the stage (and make target) that produces it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MissingArtifactError(FileNotFoundError):
    """An input artifact of a stage does not exist yet."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def from_cfg(cls, cfg) -> "RunPaths":
        return cls(Path(str(cfg.run.dir)))

    # prepare_data
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def patches_csv(self) -> Path:
        return self.data_dir / "patches.csv"

    @property
    def summary_json(self) -> Path:
        return self.data_dir / "summary.json"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    # train
    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def best_pt(self) -> Path:
        return self.model_dir / "best.pt"

    @property
    def last_pt(self) -> Path:
        return self.model_dir / "last.pt"

    @property
    def history_csv(self) -> Path:
        return self.model_dir / "history.csv"

    # evaluate
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def predictions_csv(self) -> Path:
        return self.eval_dir / "predictions.csv"

    @property
    def metrics_json(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def table_5_1(self) -> Path:
        return self.eval_dir / "table_5_1.md"

    # figures (every stage's book figures land here)
    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    # explain
    @property
    def explain_dir(self) -> Path:
        return self.root / "explain"

    @property
    def maps_npz(self) -> Path:
        return self.explain_dir / "maps.npz"

    @property
    def explain_index_csv(self) -> Path:
        return self.explain_dir / "index.csv"

    # sanity
    @property
    def sanity_dir(self) -> Path:
        return self.root / "sanity"

    @property
    def randomization_csv(self) -> Path:
        return self.sanity_dir / "randomization.csv"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"


# Which stage produces which artifact, for the error message of `require`.
PRODUCERS = {
    "patches.csv": ("prepare_data", "make data"),
    "summary.json": ("prepare_data", "make data"),
    "best.pt": ("train", "make train"),
    "last.pt": ("train", "make train"),
    "history.csv": ("train", "make train"),
    "predictions.csv": ("evaluate", "make evaluate"),
    "metrics.json": ("evaluate", "make evaluate"),
    "maps.npz": ("explain", "make explain"),
    "index.csv": ("explain", "make explain"),
}


def require(path: Path, what: str | None = None) -> Path:
    """Return `path` if it exists, else raise an error naming the stage that writes it."""
    path = Path(path)
    if path.exists():
        return path
    stage, target = PRODUCERS.get(path.name, ("an earlier stage", "make reproduce"))
    label = what or path.name
    raise MissingArtifactError(
        f"{label} not found at {path}. It is written by the {stage} stage: run `{target}` "
        f"(or `python scripts/{stage}.py` with the same overrides, e.g. the same run.dir) first."
    )
