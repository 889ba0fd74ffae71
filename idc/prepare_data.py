"""Stage `make data`: generate (synthetic) or index (Kaggle) the patches, split by patient, pack, plot.

Reads `data.root` (and generates it first when `data.source=synthetic`); writes under run.dir:
`data/patches.csv`, `data/summary.json`, `data/cache/patches-<hash>.npy` (stain-normalized with
`data.stain_normalize`, its reference in `data/cache/stain_reference.{json,png}`) and the EDA figures.
Re-running with an unchanged index rewrites nothing but the figures.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from idc.data import PATCH_COLUMNS
from idc.data.cache import identical_patches, load_or_build_cache
from idc.data.cohort import build_cohort
from idc.data.index import index_with_report
from idc.data.split import SPLITS, split_patients
from idc.data.stain import normalizer_for, save_reference
from idc.data.sites import check_sites
from idc.data.synthetic import generate_synthetic, patient_sites
from idc.errors import ConfigError
from idc.paths import RunPaths
from idc.utils import vouch_output, write_csv_atomic, write_json_atomic, wrote
from idc.viz.eda import write_eda_figures
from idc.viz.stain import site_figure, stain_figure

log = logging.getLogger("idc")


def summarize(df: pd.DataFrame, root: Path, source: str, report, identical: dict) -> dict:
    per_split = {}
    for split in SPLITS:
        sub = df[df["split"] == split]
        per_split[split] = {
            "patients": int(sub["patient_id"].nunique()),
            "patches": int(len(sub)),
            "idc_negative": int((sub["target"] == 0).sum()),
            "idc_positive": int((sub["target"] == 1).sum()),
            "positive_rate": round(float(sub["target"].mean()), 4) if len(sub) else None,
            "patient_ids": sorted(int(p) for p in sub["patient_id"].unique()),
        }
    return {
        "root": str(root),
        "source": source,
        "patients": int(df["patient_id"].nunique()),
        "patches": int(len(df)),
        "idc_negative": int((df["target"] == 0).sum()),
        "idc_positive": int((df["target"] == 1).sum()),
        "positive_rate": round(float(df["target"].mean()), 4),
        "splits": per_split,
        **report.counts(),
        "identical_pixels": identical,
        "warnings": single_class_warnings(per_split),
    }


def single_class_warnings(per_split: dict) -> list[str]:
    """A val or test split holding one class only: its F1, precision and recall are undefined."""
    out = []
    for split in ("val", "test"):
        s = per_split[split]
        if s["patches"] and min(s["idc_negative"], s["idc_positive"]) == 0:
            only = "IDC-negative" if s["idc_positive"] == 0 else "IDC-positive"
            out.append(f"the {split} split holds only {only} patches ({s['patches']} of {s['patients']} patient(s)): "
                       f"F1, precision and recall on it are undefined or meaningless (train then picks best.pt by "
                       f"val loss); use more patients (data.num_patients) or another data.split_seed")
    return out


def build_index(cfg) -> tuple[pd.DataFrame, object, Path, dict | None]:
    """(index with its split, index report, image root, {patient id: site} of a site-shift cohort or None)."""
    d = cfg.data
    check_sites(d)
    if d.source == "synthetic":
        root = Path(generate_synthetic(d))
    elif d.source == "kaggle":
        root = Path(str(d.root))
    else:
        raise ConfigError(f"data.source={d.source!r} is not known; use data=synthetic, data=tiny or data=kaggle")
    df, report = index_with_report(root, num_patients=d.num_patients, max_coordinate=d.max_coordinate)
    sites = patient_sites(d) if d.sites else None
    df = split_patients(df, seed=d.split_seed, test_size=d.test_size, val_share=d.val_share_of_holdout,
                        patient_sites=sites, test_site=d.test_site)
    return df[PATCH_COLUMNS], report, root, sites


def site_summary(df: pd.DataFrame, cfg, site_of: dict) -> dict:
    """Per site of a site-shift cohort (`site_of`: {patient id: site}): its patients and patches in each split,
    and which site is tested."""
    site = df["patient_id"].map(site_of)
    per_site = {}
    for name, sub in df.groupby(site):
        per_site[str(name)] = {split: {"patients": int(sub.loc[sub["split"] == split, "patient_id"].nunique()),
                                       "patches": int((sub["split"] == split).sum())} for split in SPLITS}
    for name, s in per_site.items():
        log.info("site %s: %s", name, ", ".join(f"{split} {s[split]['patients']} patients / {s[split]['patches']} patches"
                                               for split in SPLITS if s[split]["patients"]))
    log.info("test site: %s", cfg.data.test_site if cfg.data.test_site is not None
             else "none (data.test_site=null: the patient split over every site)")
    return {"test_site": cfg.data.test_site, "sites": per_site}


def same_index(path: Path, df: pd.DataFrame) -> bool:
    """Whether `path` holds exactly `df` (a damaged or edited file does not: it is written again)."""
    try:
        return path.exists() and pd.read_csv(path).equals(df)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError):
        return False


def run(cfg) -> pd.DataFrame:
    paths = RunPaths.from_cfg(cfg)
    df, report, root, site_of = build_index(cfg)
    # Before the index is written: a corrupt pixel stream found while packing must not leave a
    # complete-looking patches.csv and summary.json behind.
    stain = normalizer_for(df, root, cfg.data.stain_normalize, cfg.seed, paths.stain_reference_json, cfg.data.patch_size)
    images = load_or_build_cache(df, root, paths.cache_dir, size=cfg.data.patch_size, producer=True, stain=stain)
    save_reference(stain, paths.stain_reference_json, paths.stain_reference_png, root, cfg.data.patch_size)
    if same_index(paths.patches_csv, df):
        log.info("index unchanged: kept %s", vouch_output(paths.patches_csv))
    else:
        wrote(write_csv_atomic(df, paths.patches_csv), f"{len(df)} patches")
    cohort = build_cohort(cfg, paths, df, stain)
    wrote(write_csv_atomic(cohort, paths.cohort_csv), f"evaluation cohort: {cohort['patient_id'].nunique()} patients")
    identical = identical_patches(images, df["image_id"])
    if identical["files"]:
        log.warning("%d patches have a pixel-identical twin (%d groups, e.g. %s): kept, counted in %s",
                    identical["files"], identical["groups"], identical["examples"][0], paths.summary_json)
    summary = summarize(df, root, cfg.data.source, report, identical)
    summary["stain_normalize"] = stain.record() if stain is not None else None
    if site_of is not None:  # only for a site-shift cohort: the default summary is unchanged
        summary["site_shift"] = site_summary(df, cfg, site_of)
    summary["cohort"] = {"patients": int(cohort["patient_id"].nunique()), "patches": int(len(cohort)),
                         "idc_positive": int(cohort["target"].sum()), "source": str(cohort["split"].iloc[0]) if len(cohort) else None}
    wrote(write_json_atomic(paths.summary_json, summary), "counts per split and class")
    for split in SPLITS:
        s = summary["splits"][split]
        log.info("%-5s %3d patients %7d patches, %.1f%% IDC-positive", split, s["patients"], s["patches"],
                 100 * (s["positive_rate"] or 0))
    for warning in summary["warnings"]:
        log.warning(warning)
    if cfg.data.eda_figures:
        write_eda_figures(df, images, paths, seed=cfg.seed, root=root, patch=cfg.data.patch_size)
        if stain is not None:  # what normalization (either method) and stain jitter do to the same patches
            stain_figure(df, root, paths.figure("stain_normalization"), seed=cfg.seed, patch=cfg.data.patch_size)
        else:
            paths.figure("stain_normalization").unlink(missing_ok=True)  # from an earlier run with it on
        if cfg.data.sites:  # what each site's staining looks like, and which split its patients are in
            site_figure(df, site_of, root, paths.figure("site_shift"), seed=cfg.seed,
                        patch=cfg.data.patch_size)
        else:
            paths.figure("site_shift").unlink(missing_ok=True)  # from an earlier run with sites
    return df
