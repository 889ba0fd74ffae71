"""Every option of every config group composes against the structured schema (experiment=book
included), and defaults live in one place: the group files set only what differs from idc/config.py."""
from __future__ import annotations

import dataclasses

import pytest
import yaml
from omegaconf import OmegaConf

from idc import config as schema
from tests.helpers import REPO, compose_cfg

CONFIGS = REPO / "configs"
OPTIONS = sorted((p.parent.name, p.stem) for p in CONFIGS.glob("*/*.yaml"))
SECTIONS = {"data": schema.DataConfig, "model": schema.ModelConfig, "train": schema.TrainConfig,
            "evaluate": schema.EvaluateConfig, "landscape": schema.LandscapeConfig,
            "explain": schema.ExplainConfig, "sanity": schema.SanityConfig, "leaderboard": schema.LeaderboardConfig}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(tmp_path, group, option):
    extra = ["data.root=/tmp/kaggle-root"] if (group, option) == ("data", "kaggle") else []
    cfg = compose_cfg(tmp_path, f"{group}={option}", *extra)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert str(cfg.run.dir) == str(tmp_path) and cfg.run.auto is True
    if (group, option) == ("experiment", "book"):
        assert list(cfg.explain.patches) == [142, 41291] and cfg.train.optimizer == "adamax"


@pytest.mark.parametrize("group,option", [o for o in OPTIONS if o[0] in SECTIONS])
def test_group_files_do_not_repeat_the_dataclass_defaults(group, option):
    values = yaml.safe_load((CONFIGS / group / f"{option}.yaml").read_text()) or {}
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(SECTIONS[group])}
    repeated = sorted(k for k, v in values.items() if k in defaults and defaults[k] == v and k != "arch")
    assert not repeated, f"configs/{group}/{option}.yaml repeats defaults of idc/config.py: {repeated}"


def test_dead_and_test_only_keys_are_gone():
    keys = {f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)}
    assert not {"train.num_workers", "data.packed_cache", "train.crash_after_steps"} & keys
    # the leaderboard's keys live in its own group (one bootstrap key per stage), not in the sanity stage's
    assert not {"sanity.bootstrap_samples", "sanity.localization", "sanity.localization_patches", "sanity.variants",
                "sanity.leaderboard_sort", "sanity.road"} & keys
    assert {"leaderboard.bootstrap", "leaderboard.variants", "leaderboard.sort"} <= keys
    assert "sanity.bootstrap" not in keys  # the sanity CIs are t-intervals (idc.scores.inference): nothing to resample
