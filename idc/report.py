"""Report stage (`make report`): `${run.dir}/report.html`, one static page of the run's results.

Inline CSS, no script, no remote resource; every image and link is relative to run.dir, so the run
folder can be moved or zipped as a whole. A section whose input is missing says which make target
produces it instead of failing, so the report of a partial run is still useful. The interactive page
of the same run is `make view` (idc.viewer); the report links to it and shares its overview tables
(`idc.overview`). File names and the make target behind a missing one come from the registry (`idc.paths`).
"""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from idc.integrity import read_csv
from idc.markdown import markdown_table, markdown_to_html
from idc.overview import TABLE_CSS, missing_note, overview_html, run_title
from idc.paths import ALL_FIGURES, BY_KEY, OPTIONAL_FIGURES, RunPaths, make_target, stage_figures
from idc.utils import write_text_atomic, wrote

log = logging.getLogger("idc")

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: 0.8em; color: #555; }
""" + TABLE_CSS


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def figure_gallery(names: Iterable[str], paths: RunPaths, target: str) -> str:
    """The figures that exist; a note naming `target` for each that does not."""
    parts = []
    for name in names:
        path = paths.figure(name) if name in ALL_FIGURES else paths.figures_dir / f"{name}.png"
        if path.exists():
            src = html.escape(_rel(path, paths.root))
            parts.append(f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(name)}"></a>'
                         f"<figcaption>{html.escape(name)}</figcaption></figure>")
        else:
            parts.append(missing_note(f"{name}.png", target))
    return "\n".join(parts)


def markdown_section(paths: RunPaths, key: str) -> str:
    """A stage's markdown artifact as HTML, or a note naming the make target that writes it."""
    path = getattr(paths, key)
    if not path.exists():
        return missing_note(path.name, make_target(BY_KEY[key].stage))
    log.info("read %s", path)
    return markdown_to_html(path.read_text(), heading_offset=2)


TRAINING_FIGURES = ("chapter_05_loss_curve_epoch", "chapter_05_loss_curve_step")  # drawn by evaluate
HISTORY_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_precision", "val_recall", "val_f1", "test_loss",
                   "seconds", "images_per_s")


def history_table(history: pd.DataFrame) -> str:
    """model/history.csv as markdown: one row per epoch (1-based), losses and scores to 3 decimals."""
    cols = [c for c in HISTORY_COLUMNS if c in history]
    rows = [[int(r["epoch"]) + 1] + [f"{r[c]:.0f}" if c in ("seconds", "images_per_s") else f"{r[c]:.3f}" for c in cols]
            for _, r in history.iterrows()]
    return markdown_table(["epoch", *(c.replace("_", " ") for c in cols)], rows)


def training_section(paths: RunPaths) -> str:
    """The training history (model/history.csv: loss and scores per epoch) and the loss curves."""
    if paths.history_csv.exists():
        log.info("read %s", paths.history_csv)
        table = markdown_to_html(history_table(read_csv(paths.history_csv)))
    else:
        table = missing_note(paths.history_csv.name, make_target(BY_KEY["history_csv"].stage))
    return table + figure_gallery(TRAINING_FIGURES, paths, make_target("evaluate"))


def viewer_link(paths: RunPaths) -> str:
    """The interactive page of the same run (tissue, layers, attribution maps), or how to make it."""
    page, rel = paths.viewer_html, BY_KEY["viewer_html"].rel
    if not page.exists():
        return missing_note(f"The interactive viewer ({rel})", make_target(BY_KEY["viewer_html"].stage))
    return (f'<p>Interactive viewer (pan and zoom the tissue, layers, every attribution map): '
            f'<a href="{html.escape(_rel(page, paths.root))}">{html.escape(rel)}</a></p>')


def build_report(paths: RunPaths, title: Optional[str] = None) -> str:
    figs = paths.figures_dir
    others = sorted(p.stem for p in figs.glob("*.png") if p.stem not in ALL_FIGURES) if figs.is_dir() else []

    def gallery(stage: str, skip=()) -> str:  # the stage's figures as the registry lists them, optional ones if drawn
        optional = [n for n, s in OPTIONAL_FIGURES.items() if s == stage and paths.figure(n).exists()]
        names = [n for n in stage_figures(stage) if n not in skip] + optional
        return figure_gallery(names, paths, make_target(stage))

    sections = [
        ("Data", overview_html(paths) + gallery("prepare_data")),
        ("Training", training_section(paths)),
        ("Table 5.1: test-set performance", markdown_section(paths, "table_5_1") + gallery("evaluate", TRAINING_FIGURES)),
        ("Probability landscapes", gallery("landscape")),
        ("Attribution maps", gallery("explain")),
        ("Table 5.2: sanity checks", markdown_section(paths, "table_5_2") + gallery("sanity")),
        ("Which attribution method? Leaderboard", markdown_section(paths, "leaderboard_md") + gallery("leaderboard")),
        ("Localization and faithfulness", markdown_section(paths, "localization_md")),
    ]
    if others:
        sections.append(("Other figures", figure_gallery(others, paths, "make figures")))
    title = title or run_title(paths)
    body = "\n".join(f'<section id="s{i}"><h2>{html.escape(h)}</h2>\n{content}</section>'
                     for i, (h, content) in enumerate(sections))
    toc = "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>' for i, (h, _) in enumerate(sections))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>{viewer_link(paths)}<ul>{toc}</ul>\n{body}\n</body></html>\n")


def run(cfg) -> Path:
    paths = RunPaths.from_cfg(cfg)
    data = getattr(cfg, "data", None)
    page = build_report(paths, run_title(paths, getattr(data, "name", None)))
    return wrote(write_text_atomic(paths.report_html, page), "report")
