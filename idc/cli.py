"""Hydra plumbing shared by the thin entry scripts and the `idc` console script.

Stages are plain functions `idc.<module>.run(cfg)`, listed with what they read in `idc.pipeline`;
every entry point goes through `idc.pipeline.build`, which first runs the stages whose outputs the
requested one needs (missing or out of date). User errors (missing artifact, bad data, bad config)
become one logged line and exit status 2.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf.errors import MissingMandatoryValue

from idc import config as _config  # noqa: F401  (registers the structured config schema)
from idc.errors import IdcError
from idc.paths import MissingArtifactError
from idc.pipeline import STAGES, build
from idc.validate import preflight

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

log = logging.getLogger("idc")


def run_stage(stage: str, cfg):
    """Run one stage (and what it needs first); a user error becomes one clear logged line and exit code 2."""
    try:
        preflight(cfg)  # ranges, device, writable run.dir, leftovers of killed runs: before any work
        return build(stage, cfg).get(stage)
    except (IdcError, MissingArtifactError, MissingMandatoryValue) as err:
        log.error("%s: %s", stage, err)
        sys.exit(2)


def stage_main(stage: str):
    """The Hydra app of one stage, for the thin scripts/<stage>.py entry points."""
    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
    def _app(cfg):
        return run_stage(stage, cfg)

    def main() -> None:
        # The log folder ${run.dir}/logs/<job name>/ follows the stage, whoever called us.
        sys.argv[:] = with_job_name(sys.argv, stage)
        _app()

    return main


def with_job_name(argv: list[str], stage: str) -> list[str]:
    """argv with `hydra.job.name=<stage>` just before the first override: Hydra's parser needs the
    overrides in one run, so inserting it ahead of flags such as `-m` would break multiruns."""
    first = next((i for i, a in enumerate(argv[1:], 1) if "=" in a and not a.startswith("-")), len(argv))
    return [*argv[:first], f"hydra.job.name={stage}", *argv[first:]]


def main() -> None:
    """`idc <stage> [overrides...]`: the same as `python scripts/<stage>.py [overrides...]`."""
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        print("usage: idc {" + ",".join(STAGES) + "} [hydra overrides ...]", file=sys.stderr)
        sys.exit(2)
    stage = sys.argv.pop(1)
    stage_main(stage)()
