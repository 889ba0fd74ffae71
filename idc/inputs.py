"""`load_run(cfg, needs=...)`: the one way a stage loads its inputs, with the same checks everywhere.

- patches: data/patches.csv (columns checked) and its sha256, the data hash;
- images: the packed uint8 cache aligned with the patches (built on first use);
- model: model/best.pt, refused when it was trained on other data or for another model config;
- predictions: eval/predictions.csv, refused when it was computed from another checkpoint or data.
Each of patches.csv, best.pt and predictions.csv is also refused when it differs from what its stage's
record says the stage wrote (hand-edited, cut or replaced since). Each refusal is one clear error
naming the make target that fixes it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from idc.data import load_patches
from idc.data.cache import load_or_build_cache
from idc.errors import IntegrityError
from idc.integrity import changed_output, read_csv
from idc.model import load_model
from idc.paths import BY_KEY, PRODUCERS, MissingArtifactError, RunPaths, make_target, require
from idc.pipeline import file_digest, input_hashes, read_record, record_path
from idc.utils import resolve_device

log = logging.getLogger("idc")
NEEDS = ("patches", "images", "model", "predictions")
PREDICTION_COLUMNS = ["image_id", "patient_id", "x", "y", "target", "proba", "pred"]  # eval/predictions.csv


@dataclass
class RunInputs:
    paths: RunPaths
    device: Any = None
    patches: Any = None  # pandas DataFrame of data/patches.csv
    data_hash: Optional[str] = None
    images: Any = None  # memory-mapped uint8 [N, size, size, 3], rows = patches rows
    model: Any = None  # in eval mode on `device`
    checkpoint: dict = field(default_factory=dict)
    predictions: Any = None  # DataFrame of eval/predictions.csv


def check_fresh(paths: RunPaths, stage: str, artifact: str) -> None:
    """Refuse `artifact` (written by `stage`) when the files it was computed from changed since.

    `stage`'s record (idc.pipeline) holds the sha256 of each input, e.g. model/best.pt and
    data/patches.csv; a stage run outside the pipeline leaves no record and is only warned about.
    """
    recorded = input_hashes(paths, stage)
    if not recorded:
        log.warning("%s has no record of the model and data it was computed from (written outside `make`); "
                    "using it as is", artifact)
        return
    for rel, digest in recorded.items():
        path = paths.root / rel
        if digest is not None and (not path.exists() or file_digest(path) != digest):
            raise MissingArtifactError(
                f"{artifact} is out of date: it was computed from another {rel} (re-trained or re-indexed since). "
                f"Run `{make_target(stage)}` with the same overrides (or any stage with run.auto=true) first."
            )
    check_unchanged(paths, Path(os.path.relpath(artifact, paths.root)).as_posix())


def check_unchanged(paths: RunPaths, rel: str) -> None:
    """Refuse an artifact (`rel` to run.dir) that differs from what its stage's record says the stage wrote
    (hand-edited, cut or replaced since). A file without a record (made outside `make`) is used as it is."""
    stage = PRODUCERS[rel]
    changed = changed_output(read_record(paths, stage), paths.root, make_target(stage), only=rel)
    if changed:
        raise IntegrityError(f"{changed}, so it is not used: run `{make_target(stage)}` (same overrides) to write "
                             f"it again, or delete {record_path(paths, stage)} to use it as it is")


def load_run(cfg, needs: Iterable[str] = ("patches", "images", "model")) -> RunInputs:
    """Load what a stage needs from cfg.run.dir; see the module docstring for the checks."""
    needs = set(needs)
    unknown = needs - set(NEEDS)
    if unknown:
        raise ValueError(f"load_run: unknown needs {sorted(unknown)}; choose from {NEEDS}")
    paths = RunPaths.from_cfg(cfg)
    out = RunInputs(paths=paths, device=resolve_device(cfg.device))
    check_unchanged(paths, BY_KEY["patches_csv"].rel)
    out.patches = load_patches(paths)
    out.data_hash = file_digest(paths.patches_csv)
    if "images" in needs:
        out.images = load_or_build_cache(out.patches, cfg.data.root, paths.cache_dir, size=cfg.data.patch_size)
    if "model" in needs:
        check_unchanged(paths, BY_KEY["best_pt"].rel)
        out.model, out.checkpoint = load_model(require(paths.best_pt), out.device, data_hash=out.data_hash,
                                               model_cfg=cfg.model)
        log.info("read %s (epoch %d)", paths.best_pt, int(out.checkpoint["epoch"]) + 1)
    if "predictions" in needs:
        check_fresh(paths, BY_KEY["predictions_csv"].stage, str(paths.predictions_csv))
        out.predictions = read_csv(paths.predictions_csv, PREDICTION_COLUMNS)
        log.info("read %s (%d rows)", paths.predictions_csv, len(out.predictions))
    return out
