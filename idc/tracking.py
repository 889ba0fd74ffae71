"""Run tracking, offline (`train.logger`): `csv` (the default: model/history.csv and history_steps.csv, which
train writes in any case) or `tensorboard`: event files under `run.dir/tensorboard/<stage>/`, one TensorBoard
run per stage, written as the stage goes and read without any server running:

- train: per step `step/<split>_loss` and `step/<split>_running_loss` (train, val, test; the rows of
  history_steps.csv), per epoch `epoch/<column>` for every column of history.csv (losses, accuracy, val
  precision / recall / F1, seconds, images/s);
- evaluate: the PR curve of P(IDC) on the evaluated split (`<split>/pr_curve`) and its scalars
  (`<split>/average_precision`, `roc_auc`, `f1`, ... and the always-positive baseline's);
- landscape: each landscape figure (`landscape/patient_<pid>`).

Look at them with `tensorboard --logdir <run.dir>/tensorboard`. Each writer starts with purge_step (a fresh
training: 0, so a retrain hides the previous one's curves; a resumed one: its first new step), so curves
of a run that was killed and resumed do not overlap.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from idc.paths import RunPaths
from idc.validate import LOGGERS

log = logging.getLogger("idc")


class Tracker:
    """The `csv` logger: the stages' CSV files are the record; nothing else is written."""

    def steps(self, rows: Iterable[dict]) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def scalars(self, prefix: str, values: dict, step: int = 0) -> None:
        pass

    def pr_curve(self, tag: str, target, proba, step: int = 0) -> None:
        pass

    def image(self, tag: str, path: Path, step: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    def __init__(self, log_dir: Path, purge_step: Optional[int] = 0):
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.log_dir = log_dir

    def steps(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.writer.add_scalar(f"step/{r['split']}_loss", r["loss"], r["step"])
            self.writer.add_scalar(f"step/{r['split']}_running_loss", r["running_loss"], r["step"])

    def epoch(self, row: dict) -> None:
        self.scalars("epoch", {k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]) + 1)

    def scalars(self, prefix: str, values: dict, step: int = 0) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def pr_curve(self, tag: str, target, proba, step: int = 0) -> None:
        self.writer.add_pr_curve(tag, np.asarray(target, dtype=int), np.asarray(proba, dtype=np.float32), step)

    def image(self, tag: str, path: Path, step: int = 0) -> None:
        self.writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
        log.info("tensorboard: wrote events under %s (tensorboard --logdir %s)", self.log_dir, self.log_dir.parent)


def tracker(cfg, stage: str, purge_step: Optional[int] = 0, enabled: bool = True) -> Tracker:
    """The stage's tracker per `train.logger`; `enabled=False` (e.g. ranks other than 0) gives the no-op one."""
    kind = str(cfg.train.logger)
    if kind not in LOGGERS:  # preflight says so first; this guards direct calls
        raise ValueError(f"train.logger={kind} is not known; use {' or '.join(LOGGERS)}")
    if kind == "csv" or not enabled:
        return Tracker()
    return TensorBoard(getattr(RunPaths.from_cfg(cfg), f"tensorboard_{stage}"), purge_step)
