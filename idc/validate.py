"""Entry-layer checks run before any stage does work: value ranges, mandatory keys, the device, a
writable run.dir, and the leftovers of killed runs. Each problem is one ConfigError naming the key
and the valid range (the structured schema in idc/config.py already rejects unknown keys and types).

Also home of the Hydra callback that checks run.dir before Hydra creates its log folder there, and of
the `idc_pid` resolver that keeps two runs started in the same second out of one log folder.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf, open_dict, read_write

from idc import distributed as D
from idc.errors import ConfigError
from idc.utils import clean_stale_temp, ensure_writable, resolve_device

# key: (low, high, low_open, high_open, nullable). None = unbounded on that side.
RANGES = {
    "train.epochs": (1, None, False, False, False),
    "train.batch_size": (1, None, False, False, False),
    "train.eval_batch_size": (1, None, False, False, False),
    "train.max_batches": (1, None, False, False, True),
    "train.lr": (0, None, True, False, False),
    "data.patch_size": (1, None, False, False, False),
    "data.num_patients": (1, None, False, False, True),
    "data.patches_per_patient": (1, None, False, False, False),
    "data.test_size": (0, 1, True, True, False),
    "data.val_share_of_holdout": (0, 1, True, True, False),
    "data.max_coordinate": (0, None, False, False, False),
    "data.edge_patch_prob": (0, 1, False, False, False),
    "evaluate.batch_size": (1, None, False, False, False),
    "landscape.num_patients": (1, None, False, False, False),
    "explain.batch_size": (1, None, False, False, False),
    "explain.lime_num_samples": (1, None, False, False, False),
    "explain.ig_steps": (1, None, False, False, False),
    "explain.smoothgrad_samples": (1, None, False, False, False),
    "explain.rise_num_masks": (1, None, False, False, False),
    "explain.num_shards": (1, None, False, False, False),
    "atlas.batch_size": (1, None, False, False, False),
    "atlas.num_shards": (1, None, False, False, False),
    "sanity.num_patches": (1, None, False, False, False),
    "sanity.random_labels_epochs": (1, None, False, False, False),
    "leaderboard.num_patches": (1, None, False, False, False),
    "leaderboard.bootstrap": (1, None, False, False, False),
}
_ABSENT = object()
LOGGERS = ("csv", "tensorboard")


def describe_range(low, high, low_open, high_open, nullable) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts) + (" (or null)" if nullable else "")


def check_range(key: str, value, low, high, low_open, high_open, nullable) -> None:
    if value is None and nullable:
        return
    bad = value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
    if not bad:
        bad = (low is not None and (value <= low if low_open else value < low)) or \
              (high is not None and (value >= high if high_open else value > high))
    if bad:
        valid = describe_range(low, high, low_open, high_open, nullable)
        raise ConfigError(f"{key}={value} is out of range: use a value {valid}")


def check_mandatory(cfg) -> None:
    """A `???` value (e.g. data.root of data=kaggle) as one line instead of OmegaConf's traceback."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if "data.root" in missing:
        raise ConfigError("data.root is not set: data=kaggle reads an existing set; add "
                          "data.root=/path/to/IDC_regular_ps50_idx5 (the folder holding the patient folders)")
    if missing:
        raise ConfigError(f"{missing[0]} is not set (???): give it on the command line, e.g. {missing[0]}=...")


def validate_config(cfg) -> None:
    """Raise ConfigError for the first value outside its valid range (keys absent from cfg are skipped)."""
    check_mandatory(cfg)
    for key, spec in RANGES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT:
            check_range(key, value, *spec)
    e = cfg.get("explain")
    for outcome, count in dict(OmegaConf.select(cfg, "explain.select", default=None) or {}).items():
        check_range(f"explain.select.{outcome}", count, 0, None, False, False, False)  # -1 meant "all but one"
    if e is not None and "shard_index" in e and not 0 <= e.shard_index < e.num_shards:
        raise ConfigError(f"explain.shard_index={e.shard_index} is out of range: use 0 .. explain.num_shards-1 "
                          f"({e.num_shards - 1})")
    a = cfg.get("atlas")
    if a is not None and "shard_index" in a and not 0 <= a.shard_index < a.num_shards:
        raise ConfigError(f"atlas.shard_index={a.shard_index} is out of range: use 0 .. atlas.num_shards-1 "
                          f"({a.num_shards - 1})")
    logger = OmegaConf.select(cfg, "train.logger", default=None)
    if logger is not None and logger not in LOGGERS:
        raise ConfigError(f"train.logger={logger} is not known; use {' or '.join(LOGGERS)}")


def preflight(cfg) -> None:
    """Everything a stage checks before it reads data: config ranges, device, writable run.dir; then the
    temp files and folders of killed runs under run.dir are removed."""
    validate_config(cfg)
    resolve_device(cfg.device)
    run_dir = ensure_writable(Path(str(cfg.run.dir)), "run.dir")
    clean_stale_temp(run_dir)


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("idc_pid"):
        OmegaConf.register_new_resolver("idc_pid", lambda: os.getpid(), use_cache=True)


_register_resolvers()

try:  # the callback class needs hydra; the rest of this module does not
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a hard dependency
    Callback = object


class RunDirCheck(Callback):
    """Hydra callback (configs/config.yaml, hydra.callbacks): before Hydra creates its log folder under
    run.dir, check that run.dir can be written; if not, print one line and exit 2 (Hydra would print a
    30-line traceback). SystemExit passes through Hydra's error reporting, which catches Exception."""

    def on_run_start(self, config, **kwargs) -> None:
        stage = OmegaConf.select(config, "hydra.job.name", default="idc")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            share_run_dir(config, stage)
        try:
            ensure_writable(Path(str(config.run.dir)), "run.dir")
        except ConfigError as err:
            print(f"[idc][ERROR] {stage}: {err}", file=sys.stderr)
            raise SystemExit(2) from None


def share_run_dir(config, stage: str) -> None:
    """Under torchrun each rank is its own Hydra app and resolves run.dir itself (hydra issue 2070: with
    `${now:...}` in it, each rank would get its own folder). Rank 0 decides: the process group is joined here,
    before Hydra makes its log folder, and every rank takes rank 0's run.dir (its log folder goes under it)."""
    info = D.init_distributed(OmegaConf.select(config, "train.dist_backend", default="auto"))
    mine = str(config.run.dir)
    chosen = D.rank0_value(info, mine)
    if chosen != mine:
        print(f"[idc][INFO] {stage}: rank {info.rank} uses rank 0's run.dir={chosen} (it resolved {mine})", file=sys.stderr)
    with read_write(config), open_dict(config):
        config.run.dir = chosen
