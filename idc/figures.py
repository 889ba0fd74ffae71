"""Figures stage (`make figures`): every chapter-5 figure under the book's file name, plus ours.

`idc.pipeline` first runs every stage whose outputs are missing or out of date (the figure list and
the stage drawing each come from the registry, `idc.paths.FIGURES`); this stage then checks that
every expected figure exists, logs a figure -> path table and writes `figures/index.md`, which
pairs each figure with the book's published one for side-by-side review.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Optional

from idc.markdown import markdown_table
from idc.paths import FIGURES, MissingArtifactError, RunPaths, make_target
from idc.utils import write_text_atomic, wrote

log = logging.getLogger("idc")

# Where the book's published figures are kept (outside the repo; optional).
BOOK_FIGURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "book-figures"

# Our name -> the file name the book's repository uses where the two differ.
BOOK_ALIASES = {"chapter_05_patient2_breast_tissue_proba": "chapter_05_patient2_breast_tissue"}


def expected_figures() -> Dict[str, str]:
    """Every figure `make figures` guarantees -> the stage that draws it."""
    return dict(FIGURES)


def check_figures(paths: RunPaths) -> Dict[str, Path]:
    """{name: path} of every expected figure; a missing one raises naming the stage that draws it."""
    found, missing = {}, []
    for name, stage in expected_figures().items():
        path = paths.figure(name)
        if path.exists():
            found[name] = path
        else:
            missing.append((name, stage))
    if missing:
        listing = "; ".join(
            f"{n}.png (drawn by the {s} stage: `{make_target(s)}`)" for n, s in missing
        )
        raise MissingArtifactError(
            f"{len(missing)} figure(s) missing from {paths.figures_dir}: {listing}. Re-run that stage with the same "
            "run.dir and run.force=true (e.g. `make explain ARGS=\"run.force=true\"`)."
        )
    return found


def book_counterpart(name: str, book_dir: Optional[Path]) -> Optional[Path]:
    """The book's published figure for one of ours, if the reference folder has it."""
    if book_dir is None:
        return None
    for candidate in (name, BOOK_ALIASES.get(name)):
        if candidate and (book_dir / f"{candidate}.png").exists():
            return book_dir / f"{candidate}.png"
    return None


def figure_index(figures_dir: Path, book_dir: Optional[Path]) -> str:
    """Markdown: each expected figure beside the book's (relative links); then any other figure of ours."""
    figures_dir = Path(figures_dir)
    has_book = book_dir is not None and Path(book_dir).is_dir()
    rows = []
    for name, stage in expected_figures().items():
        row = [name, stage, f"![{name}]({name}.png)"]
        if has_book:
            book = book_counterpart(name, Path(book_dir))
            row.append(f"![book]({Path(os.path.relpath(book, figures_dir)).as_posix()})" if book else "(none)")
        rows.append(row)
    lines = ["# Figures", "", "Our figures next to the book's published ones (same file names)." if has_book
             else "The book's figures folder was not found, so only ours are listed.", "",
             markdown_table(["figure", "stage", "ours"] + (["book"] if has_book else []), rows)]
    extra = sorted(p.name for p in figures_dir.glob("*.png") if p.stem not in expected_figures())
    if extra:
        lines += ["", "## Other figures of ours", ""] + [f"- [{n}]({n})" for n in extra]
    return "\n".join(lines) + "\n"


def run(cfg, book_dir: Optional[Path] = BOOK_FIGURES_DIR) -> Dict[str, Path]:
    paths = RunPaths.from_cfg(cfg)
    found = check_figures(paths)
    width = max(len(n) for n in found)
    log.info("figures:\n%s", "\n".join(f"  {n:<{width}}  {p}" for n, p in found.items()))
    book = Path(book_dir) if book_dir is not None and Path(book_dir).is_dir() else None
    if book is None:
        log.info("book figures folder %s not found; index.md lists ours only", book_dir)
    wrote(write_text_atomic(paths.figure_index_md, figure_index(paths.figures_dir, book)), "figure index")
    return found
