"""The stage graph: which stage reads what, derived from the artifact registry (`idc.paths`).

`build(stage, cfg)` runs a stage after making its inputs up to date: each producing stage whose
output is missing or out of date runs first, with the same config, and logs why. A stage's outputs
are up to date when its record (``run.dir/.stages/<stage>.json``, written after each run) holds the
same sha256 of every input file (e.g. the checkpoint and data/patches.csv), the same values of the
config keys that shape them, the same records of the stages it follows, and its outputs all exist.
An up-to-date stage never runs again (``run.force=true`` re-runs the requested one). With
``run.auto=false`` a missing or stale input is an error naming the make target that produces it.
The record also holds the digest of each output, so a file changed after its stage wrote it (hand-edited,
cut, replaced) makes that stage out of date; it is written only by a run that wrote (or vouched for)
all of the stage's outputs itself, never by one explain shard of several.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from idc.integrity import changed_output, file_digest, identity, output_digest
from idc.paths import (ARTIFACTS, BY_KEY, OPTIONAL_FIGURES, MissingArtifactError, RunPaths, make_target,
                       stage_artifacts, stage_figures)
from idc.utils import recording_outputs, write_json_atomic

log = logging.getLogger("idc")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # `<module>.run(cfg)` does the work
    inputs: Tuple[str, ...] = ()  # artifact keys it reads; their sha256 goes into its record
    after: Tuple[str, ...] = ()  # stages that must be up to date first although no file of theirs is read
    config: Tuple[str, ...] = ()  # config keys whose values shape its outputs
    ignore: Tuple[str, ...] = ()  # sub-keys of `config` that do not (resume, sharding, ...)
    # artifact keys read when present: their sha256 (or absence) goes into the record, their producer is not run
    optional: Tuple[str, ...] = ()


_EVERY_RESULT = ("prepare_data", "train", "evaluate", "landscape", "explain", "sanity", "leaderboard")
STAGES: Dict[str, Stage] = {s.name: s for s in [
    Stage("prepare_data", "idc.prepare_data", config=("data", "seed"), ignore=("data.workers",)),
    Stage("train", "idc.train", inputs=("patches_csv",), config=("model", "train", "seed"),
          ignore=("train.resume", "train.dist_backend", "train.eval_batch_size", "train.logger")),
    # train.logger: evaluate and landscape write their part of the tensorboard run when it is switched on
    Stage("evaluate", "idc.evaluate", inputs=("patches_csv", "best_pt", "history_csv"), config=("evaluate", "train.logger"),
          ignore=("evaluate.batch_size",)),
    Stage("landscape", "idc.landscape", inputs=("patches_csv", "best_pt", "predictions_csv"),
          config=("landscape", "train.logger")),
    Stage("explain", "idc.explain.stage", inputs=("patches_csv", "best_pt", "predictions_csv"), config=("explain",),
          ignore=("explain.merge", "explain.num_shards", "explain.shard_index", "explain.batch_size")),
    # every patch of the chosen patients; the explain.* keys that only choose patches or draw explain's figures
    # do not shape its maps
    Stage("atlas", "idc.atlas.stage", inputs=("patches_csv", "best_pt"), config=("atlas", "explain", "data.masks_dir"),
          ignore=("atlas.merge", "atlas.num_shards", "atlas.shard_index", "explain.merge", "explain.num_shards",
                  "explain.shard_index", "explain.batch_size", "explain.methods",
                  "explain.patches", "explain.select", "explain.image_ids", "explain.target", "explain.visualize",
                  "explain.visualize_patch", "explain.filter_layers", "explain.filter_count", "explain.filter_steps")),
    Stage("visualize", "idc.explain.visualize", inputs=("patches_csv", "best_pt", "explain_index_csv"),
          config=("explain",), ignore=("explain.merge", "explain.num_shards", "explain.shard_index")),
    Stage("sanity", "idc.sanity.stage", inputs=("patches_csv", "best_pt", "cohort_csv"),
          config=("sanity", "explain", "train", "seed"),
          ignore=("train.resume", "train.dist_backend", "train.logger", "explain.merge", "explain.num_shards",
                  "explain.shard_index")),
    # localization, faithfulness, shortcut mass and the leaderboard; reads the sanity verdicts and randomizes
    # the model as the sanity stage does (its randomized-model control rows)
    Stage("leaderboard", "idc.leaderboard.stage",
          inputs=("patches_csv", "best_pt", "randomization_csv", "cohort_csv"),
          config=("leaderboard", "explain", "sanity.cascade", "sanity.reinit", "sanity.seed", "seed"),
          ignore=("explain.merge", "explain.num_shards", "explain.shard_index")),
    Stage("figures", "idc.figures", after=_EVERY_RESULT),
    Stage("report", "idc.report", after=_EVERY_RESULT),
    # the viewer shows predictions, maps and sanity scores: those stages run first when missing or out of date
    # ... and the attribution landscapes when `make atlas` made them (an IG atlas takes minutes: never run for it)
    Stage("view", "idc.viewer.stage", inputs=("patches_csv",), after=("evaluate", "explain", "sanity", "leaderboard"),
          config=("data.masks_dir",), optional=("atlas_summary_json",)),
]}
assert {a.stage for a in ARTIFACTS} <= set(STAGES), "an artifact names an unknown stage"


def producers(stage: str) -> List[str]:
    """The stages `stage` follows: the producers of its inputs, then its `after` list (no duplicates)."""
    s = STAGES[stage]
    deps = [BY_KEY[key].stage for key in s.inputs] + list(s.after)
    return list(dict.fromkeys(d for d in deps if d != stage))


# ---------------------------------------------------------------- records
def config_values(stage: str, cfg) -> dict:
    """{key: resolved value} of the config keys that shape the stage's outputs."""
    s, out = STAGES[stage], {}
    for key in s.config:
        node = OmegaConf.select(cfg, key)
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        for ignored in s.ignore:
            head, _, leaf = ignored.partition(".")
            if head == key and isinstance(value, dict):
                value.pop(leaf, None)
        out[key] = value
    return out


def record_path(paths: RunPaths, stage: str) -> Path:
    return paths.stamps_dir / f"{stage}.json"


def read_record(paths: RunPaths, stage: str) -> Optional[dict]:
    path = record_path(paths, stage)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record_digest(paths: RunPaths, stage: str) -> Optional[str]:
    path = record_path(paths, stage)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def expected_record(stage: str, cfg, paths: RunPaths) -> dict:
    """What the record of an up-to-date run of `stage` holds for the current inputs and config."""
    s = STAGES[stage]
    inputs = {}
    for key in s.inputs + s.optional:
        path = getattr(paths, key)
        inputs[BY_KEY[key].rel] = file_digest(path) if path.exists() else None
    return {"stage": stage, "inputs": inputs, "after": {d: record_digest(paths, d) for d in s.after},
            "config": config_values(stage, cfg)}


def input_hashes(paths: RunPaths, stage: str) -> Dict[str, str]:
    """The sha256 of each input file as recorded when `stage` last ran (e.g. model/best.pt): {} if unknown."""
    record = read_record(paths, stage)
    return dict(record.get("inputs", {})) if record else {}


def write_record(stage: str, cfg, paths: RunPaths, vouched=()) -> Path:
    """After a successful run: the inputs' hashes, the config values and the digest of each output that
    exists now (declared artifacts and figures, and the files the run vouched for, e.g. the packed cache)."""
    record = expected_record(stage, cfg, paths)
    figures = stage_figures(stage) + [n for n, s in OPTIONAL_FIGURES.items() if s == stage]
    outputs = [a.rel for a in stage_artifacts(stage, core_only=False) if a.tracked]
    outputs += [f"figures/{n}.png" for n in figures]
    root = os.path.abspath(paths.root)
    outputs += sorted(Path(os.path.relpath(v, root)).as_posix() for v in vouched if v.startswith(root + os.sep))
    record["outputs"] = {o: output_digest(paths.root / o) for o in dict.fromkeys(outputs) if (paths.root / o).is_file()}
    return write_json_atomic(record_path(paths, stage), record)


class Changed(str):
    """A stale reason saying that an output was changed after its stage wrote it (logged as a warning)."""


def stale_reason(stage: str, cfg, paths: RunPaths) -> Optional[str]:
    """Why `stage` must run (its outputs are missing, changed or out of date), or None when they are up to date."""
    missing = [a.rel for a in stage_artifacts(stage) if not (paths.root / a.rel).exists()]
    if missing:
        return f"{missing[0]} not found"
    record = read_record(paths, stage)
    if record is None:
        return "there is no record of the inputs its outputs were made from"
    gone = [o for o in record.get("outputs", []) if not (paths.root / o).exists()]
    if gone:
        return f"{gone[0]} not found"
    changed = changed_output(record, paths.root, make_target(stage))
    if changed:
        return Changed(changed)
    want = expected_record(stage, cfg, paths)
    for rel, digest in want["inputs"].items():
        if record.get("inputs", {}).get(rel) != digest:
            return f"{rel} changed since its outputs were made"
    for dep, digest in want["after"].items():
        if record.get("after", {}).get(dep) != digest:
            return f"the {dep} stage re-ran since"
    for key, value in want["config"].items():
        old = record.get("config", {}).get(key)
        if old != value:
            return f"the config changed: {describe_change(key, old, value)}"
    return None


def describe_change(key: str, old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return describe_change(f"{key}.{k}", old.get(k), new.get(k))
    return f"{key} was {old!r}, is {new!r}"


# ---------------------------------------------------------------- building
def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_one(stage: str, cfg, paths: RunPaths):
    """Run a stage; write its record only if this run wrote (or vouched for) every core output itself,
    so that e.g. one explain shard of several never claims the maps.npz an earlier run left."""
    core = [paths.root / a.rel for a in stage_artifacts(stage)]
    before = {p: identity(p) for p in core}
    with recording_outputs() as vouched:
        result = importlib.import_module(STAGES[stage].module).run(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        kept = [p for p in core
                if identity(p) is None or (identity(p) == before[p] and os.path.abspath(p) not in vouched)]
        if kept:
            log.info("%s: no record written: this run did not write %s (e.g. one shard of several)", stage, kept[0])
        else:
            write_record(stage, cfg, paths, vouched)
    return result


def build(stage: str, cfg) -> Dict[str, object]:
    """Run `stage` after every stage it follows is up to date; returns {stage: result} of what ran, in order.

    An up-to-date stage is skipped (the requested one too, unless run.force=true). With run.auto=false,
    or under torchrun (every rank would run them), an out-of-date input is an error instead.
    """
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
    paths = RunPaths.from_cfg(cfg)
    auto = bool(OmegaConf.select(cfg, "run.auto", default=True)) and not _distributed()
    force = bool(OmegaConf.select(cfg, "run.force", default=False))
    ran: Dict[str, object] = {}
    seen: set = set()

    def ensure(name: str, requested: bool) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in producers(name):
            ensure(dep, False)
        reason = stale_reason(name, cfg, paths)
        if requested:
            if reason is None and not force:
                log.info("%s: up to date (same inputs and config); nothing to do (run.force=true re-runs it)", name)
                return
        elif reason is None:
            return
        elif not auto:
            raise stale_error(name, reason, paths)
        why = reason or "run.force=true"
        if isinstance(reason, Changed):  # say what will be rebuilt before rebuilding it
            log.warning("pipeline: %s; running %s writes it again%s", reason, name,
                        "" if requested else f" before {stage}")
        else:
            log.info("pipeline: running %s (%s)%s", name, why, "" if requested else f" before {stage}")
        ran[name] = run_one(name, cfg, paths)

    ensure(stage, True)
    return ran


def stale_error(stage: str, reason: str, paths: RunPaths) -> MissingArtifactError:
    target = make_target(stage)
    return MissingArtifactError(
        f"the {stage} stage's outputs under {paths.root} are not usable: {reason}. Run `{target}` with the same "
        f"overrides (same run.dir) first, or leave run.auto=true (the default) to run it automatically."
    )
