"""Report stage (`make report`): `${run.dir}/report.html`, one static page of the run's results.

Inline CSS, no script, no remote resource; every image and link is relative to run.dir, so the run
folder can be moved or zipped as a whole. A section whose input is missing says which make target
produces it instead of failing, so the report of a partial run is still useful. The interactive page
of the same run is `make view` (idc.viewer); the report links to it and shares its overview tables.
"""
from __future__ import annotations

import html
import logging
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional

from idc.paths import FIGURES, OPTIONAL_FIGURES, RunPaths, make_target, stage_figures
from idc.utils import write_text_atomic, wrote
from idc.viewer.overview import TABLE_CSS, missing_note, overview_html, run_title

log = logging.getLogger("idc")

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: 0.8em; color: #555; }
""" + TABLE_CSS


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` (the only inline markdown our tables use)."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _table_html(rows: List[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    cells = [c for c in cells if not all(re.fullmatch(r":?-{3,}:?", x) for x in c)]  # drop the rule line
    head, body = cells[0], cells[1:]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</table>"])


def markdown_to_html(md: str, heading_offset: int = 2) -> str:
    """The small markdown subset our stages write: headings, pipe tables, paragraphs, bullet lists."""
    blocks, table, para = [], [], []

    def flush():
        if table:
            blocks.append(_table_html(table))
            table.clear()
        if para:
            items = [p for p in para if p.startswith("- ")]
            if items and len(items) == len(para):
                blocks.append("<ul>" + "".join(f"<li>{_inline(p[2:])}</li>" for p in para) + "</ul>")
            else:
                blocks.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    for line in md.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            if para:
                flush()
            table.append(stripped)
        elif stripped.startswith("#"):
            flush()
            level = min(6, len(stripped) - len(stripped.lstrip("#")) + heading_offset)
            blocks.append(f"<h{level}>{_inline(stripped.lstrip('#').strip())}</h{level}>")
        elif not stripped:
            flush()
        else:
            if table:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(blocks)


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def figure_gallery(names: Iterable[str], figures_dir: Path, root: Path, target: str) -> str:
    parts = []
    for name in names:
        path = figures_dir / f"{name}.png"
        if path.exists():
            src = html.escape(_rel(path, root))
            parts.append(f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(name)}"></a>'
                         f"<figcaption>{html.escape(name)}</figcaption></figure>")
        else:
            parts.append(missing_note(f"{name}.png", target))
    return "\n".join(parts)


def _optional_figure(name: str, figures_dir: Path, root: Path) -> str:
    """A figure that only some runs have (e.g. synthetic-only); nothing when absent."""
    return figure_gallery([name], figures_dir, root, "") if (figures_dir / f"{name}.png").exists() else ""


def markdown_section(path: Path, target: str) -> str:
    if not path.exists():
        return missing_note(path.name, target)
    log.info("read %s", path)
    return markdown_to_html(path.read_text(), heading_offset=2)


def viewer_link(paths: RunPaths) -> str:
    """The interactive page of the same run (tissue, layers, attribution maps), or how to make it."""
    page = paths.viewer_html
    if not page.exists():
        return missing_note("The interactive viewer (viewer/index.html)", "make view")
    return (f'<p>Interactive viewer (pan and zoom the tissue, layers, every attribution map): '
            f'<a href="{html.escape(_rel(page, paths.root))}">viewer/index.html</a></p>')


def build_report(paths: RunPaths, title: Optional[str] = None) -> str:
    root, figs = paths.root, paths.figures_dir
    shown = set(FIGURES) | set(OPTIONAL_FIGURES)
    others = sorted(p.stem for p in figs.glob("*.png") if p.stem not in shown) if figs.is_dir() else []

    def gallery(stage: str) -> str:  # the stage's figures, as the registry lists them
        return figure_gallery(stage_figures(stage), figs, root, make_target(stage))

    sections = [
        ("Data", overview_html(paths) + gallery("prepare_data")),
        ("Training", gallery("train")),
        ("Table 5.1: test-set performance", markdown_section(paths.table_5_1, make_target("evaluate"))
         + gallery("evaluate")),
        ("Probability landscapes", gallery("landscape")),
        ("Attribution maps", gallery("explain")),
        ("Table 5.2: sanity checks", markdown_section(paths.table_5_2, make_target("sanity")) + gallery("sanity")),
        ("Localization and faithfulness", markdown_section(paths.localization_md, make_target("leaderboard"))
         + "".join(_optional_figure(n, figs, root) for n in OPTIONAL_FIGURES)),
    ]
    if others:
        sections.append(("Other figures", figure_gallery(others, figs, root, "make figures")))
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
