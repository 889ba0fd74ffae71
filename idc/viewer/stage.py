"""Stage `make view`: `${run.dir}/viewer/index.html` plus `viewer/assets/`, an interactive page of the run.

Reads data/patches.csv and the packed cache (required), and when present eval/predictions.csv,
eval/table_5_1.md, explain/index.csv + maps.npz, sanity/*.md|csv and the synthetic evidence masks
(`<data.masks_dir>/<pid>.npz`). A missing optional input removes its layer and leaves a note naming
the make target that adds it. The folder is built beside the old one and swapped in when complete.
"""
from __future__ import annotations

import html
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from idc.data.cache import load_or_build_cache
from idc.errors import DataError
from idc.explain.methods import METHODS
from idc.markdown import markdown_to_html
from idc.overview import missing_note, overview_html, run_title
from idc.paths import BY_KEY, RunPaths, make_target
from idc.utils import temp_dir, write_text_atomic, wrote
from idc.viewer import assets
from idc.viewer.inputs import load_inputs, patch_table, viewer_patients
from idc.viewer.page import PageContent, build_page, pr_points
from idc.viewer.panels import patch_panel

log = logging.getLogger("idc")
ERROR_COLORS = {"FP": "#ff7f0e", "FN": "#1f77b4"}


def slide_columns(table: pd.DataFrame, heights: dict) -> pd.DataFrame:
    """Bokeh geometry (y up: slide row y is drawn at H - y) and the per-layer alphas and texts."""
    H = table["patient_id"].map(heights).to_numpy()
    x, y, w, h = (table[c].to_numpy() for c in ("x", "y", "width", "height"))
    proba = table["proba"].to_numpy()
    explained = table["explain_row"].to_numpy() >= 0
    return table.assign(
        left=x, right=x + w, top=H - y, bottom=H - y - h, cx=x + w / 2, cy=H - y - h / 2,
        gt_alpha=0.35 * (table["target"].to_numpy() == 1),
        err_color=table["outcome"].map(ERROR_COLORS).fillna("#000000"),
        err_alpha=table["outcome"].isin(list(ERROR_COLORS)).astype(float),
        explained_alpha=explained.astype(float),
        label_text=np.where(table["target"].to_numpy() == 1, "1 (IDC)", "0 (no IDC)"),
        proba_text=["" if np.isnan(p) else f"{p:.3f}" for p in proba],
        maps_text=np.where(explained, "yes: click", "no"),
    )


def patient_assets(cfg, table: pd.DataFrame, images, folder: Path, atlas=None) -> pd.DataFrame:
    """Tissue JPEG (+ evidence mask PNG, + attribution landscape PNGs) per patient; returns one row per patient
    for the page."""
    rows, paths = [], RunPaths.from_cfg(cfg)
    for pid, sub in tqdm(table.groupby("patient_id", sort=False), desc="viewer: patients", unit="patient"):
        tissue = assets.tissue_image(sub, images[sub["cache_row"].to_numpy()], cfg.data.root, cfg.data.patch_size)
        mask = assets.load_mask(cfg.data.masks_dir, pid)
        uris = {"tissue": assets.data_uri(assets.jpeg_bytes(tissue), "image/jpeg"),
                "mask": assets.data_uri(None if mask is None else assets.mask_png_bytes(mask, tissue.shape[:2]), "image/png"),
                "atlas": assets.atlas_layers(paths, atlas, pid, tissue.shape[:2])}
        script = assets.patient_script(folder, pid, **uris)
        ex = sub[sub["explain_row"] >= 0]
        split = sub["split"].iloc[0]
        rows.append({
            "pid": int(pid), "width": tissue.shape[1], "height": tissue.shape[0],
            "script_url": script.relative_to(folder.parent).as_posix(), "has_mask": mask is not None,
            "start": int(sub.index.min()), "stop": int(sub.index.max()) + 1,
            "label": f"{int(pid)} ({split}, {len(sub)} patches, {len(ex)} explained"
                     f"{', landscapes' if uris['atlas'] else ''})",
            "explained_options": [[str(int(i - sub.index.min())), f"{r.image_id} ({r.outcome})"] for i, r in ex.iterrows()],
        })
    return pd.DataFrame(rows)


def explained_panels(inputs, table: pd.DataFrame, images, folder: Path, root: Path) -> dict:
    """explain row -> the attribution panel HTML of that patch (assets written under `folder`)."""
    methods = {m: METHODS[m].title if m in METHODS else m for m in inputs.maps}
    shown = table[table["explain_row"] >= 0].drop_duplicates("explain_row").set_index("explain_row")
    panels = {}
    for _, rec in tqdm(list(inputs.explained.iterrows()), desc="viewer: explained patches", unit="patch"):
        k = int(rec["row"])
        if k not in shown.index:
            continue  # a patient the viewer does not show
        files = assets.explained_patch_assets(np.asarray(images[int(shown.loc[k, "cache_row"])]),
                                              {m: inputs.maps[m][k] for m in methods}, folder, f"{k:04d}")
        panels[k] = patch_panel(rec, files, methods, root, inputs.leaderboard, inputs.randomization)
    return panels


def markdown_or_note(paths: RunPaths, key: str, heading: str) -> str:
    """The stage's markdown (it carries its own heading), or `heading` and a note naming its make target."""
    path = getattr(paths, key)
    if not path.exists():
        return f"<h2>{html.escape(heading)}</h2>" + missing_note(path.name, make_target(BY_KEY[key].stage))
    log.info("read %s", path)
    return markdown_to_html(path.read_text(), heading_offset=1)


def results_html(paths: RunPaths) -> tuple[str, str]:
    table = markdown_or_note(paths, "table_5_1", "Table 5.1: test-set performance")
    board = markdown_or_note(paths, "leaderboard_md", "Which attribution method? Leaderboard")
    board += markdown_or_note(paths, "table_5_2", "Table 5.2: sanity checks")
    if paths.localization_md.exists():
        board += markdown_or_note(paths, "localization_md", "Localization")
    return table, board


def build(cfg, paths: RunPaths, out: Path) -> dict:
    """Write the page and its assets into `out`; return the numbers the stage logs."""
    inputs = load_inputs(paths)
    pids = viewer_patients(inputs.patches, inputs.predictions)
    if not pids:
        raise DataError(f"{paths.patches_csv} has no test patients and there are no predictions: nothing to view; "
                        "check data.test_size or re-run `make data`")
    images = load_or_build_cache(inputs.patches, cfg.data.root, paths.cache_dir, size=cfg.data.patch_size)
    table = patch_table(inputs.patches, inputs.predictions, inputs.explained, pids)
    patients = patient_assets(cfg, table, images, out / "assets", inputs.atlas)
    table = slide_columns(table, dict(zip(patients["pid"], patients["height"])))
    panels = explained_panels(inputs, table, images, out / "assets" / "explain", out) if inputs.explained is not None else {}
    table["panel"] = [panels.get(k, "") for k in table["explain_row"]]
    has_masks = bool(patients["has_mask"].any())
    shown_elsewhere = {make_target(BY_KEY[k].stage) for k in ("randomization_csv", "leaderboard_csv")}  # in the panels
    notes = [n.text() for n in inputs.notes if n.target not in shown_elsewhere]
    if not has_masks:
        notes.append(f"Evidence mask: no <masks_dir>/<pid>.npz for these patients (data.masks_dir={cfg.data.masks_dir}); "
                     "only the synthetic set has one (make data with data=synthetic).")
    pr = None
    if inputs.predictions is not None and inputs.predictions["target"].nunique() == 2:
        pr = pr_points(inputs.predictions["target"], inputs.predictions["proba"])
    table_html, board_html = results_html(paths)
    content = PageContent(
        title=run_title(paths, str(cfg.data.name)), subtitle=f"run directory: {paths.root.resolve()}",
        table=table.drop(columns=["split", "cache_row"]), patients=patients,
        has_predictions=inputs.predictions is not None, has_masks=has_masks,
        atlas_methods={m: METHODS[m].title if m in METHODS else m for m in (inputs.atlas or {}).get("methods", [])},
        notes=[html.escape(n) for n in notes], results_html=table_html, leaderboard_html=board_html,
        overview_html=overview_html(paths), pr=pr)
    page = write_text_atomic(out / "index.html", build_page(content))
    page.chmod(0o644)  # readable like its assets (a temp file is created private), e.g. by a web server
    return {"patients": len(patients), "patches": len(table), "explained": len(panels)}


def run(cfg) -> Path:
    paths = RunPaths.from_cfg(cfg)
    final = paths.viewer_dir
    t0 = time.perf_counter()
    # temp folders named like temp files: a killed build leaves one that the next start removes
    with temp_dir(final) as tmp, temp_dir(final) as trash:
        counts = build(cfg, paths, tmp)
        if final.exists():
            final.rename(trash / final.name)
        tmp.rename(final)
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    page = paths.viewer_html
    log.info("viewer: %(patients)d patients, %(patches)d patches, %(explained)d explained", counts)
    log.info("viewer: index.html %.1f MB, assets %.1f MB, built in %.1f s; open it in a browser (file://) or serve "
             "the run dir with `python -m http.server`", page.stat().st_size / 1e6,
             (size - page.stat().st_size) / 1e6, time.perf_counter() - t0)
    return wrote(page, "interactive viewer")
