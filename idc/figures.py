"""Figures stage (`make figures`): every chapter-5 figure under the book's file name, plus ours.

Runs each producing stage whose output is missing (and every stage after it, whose outputs would be
stale), checks that every expected figure exists, logs a figure -> path table and writes
`figures/index.md`, which pairs each figure with the book's published one for side-by-side review.
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from idc.cli import STAGES
from idc.paths import MissingArtifactError, RunPaths
from idc.sanity.plots import FIGURE_NAMES as SANITY_FIGURES
from idc.utils import write_text_atomic, wrote

log = logging.getLogger("idc")

# Where the book's published figures are kept (outside the repo; optional).
BOOK_FIGURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "book-figures"

STAGE_ORDER = ["prepare_data", "train", "evaluate", "landscape", "explain", "sanity"]
MAKE_TARGETS = {"prepare_data": "make data"}

# The chapter's figures, in the book's order, with the stage that draws each.
BOOK_FIGURES: Dict[str, str] = {
    "chapter_05_target_pc": "prepare_data",
    "chapter_05_idc_positive_samples": "prepare_data",
    "chapter_05_idc_negative_samples": "prepare_data",
    "chapter_05_patient_tissue_slice": "prepare_data",
    "chapter_05_patient_patch_dist": "prepare_data",
    "chapter_05_train_val_test_splits": "prepare_data",
    "chapter_05_loss_curve_epoch": "evaluate",
    "chapter_05_loss_curve_step": "evaluate",
    "chapter_05_pr_curve": "evaluate",
    "chapter_05_patient1_breast_tissue_proba": "landscape",
    "chapter_05_patient2_breast_tissue_proba": "landscape",
    "chapter_05_lime_explanation": "explain",
    "chapter_05_vanilla_backprop": "explain",
    "chapter_05_guided_backprop": "explain",
    "chapter_05_integrated_gradients": "explain",
    "chapter_05_smooth_grad": "explain",
    "chapter_05_grad_cam": "explain",
    "chapter_05_guided_grad_cam": "explain",
}
OUR_FIGURES: Dict[str, str] = {name: "sanity" for name in SANITY_FIGURES.values()}
# Our name -> the file name the book's repository uses where the two differ.
BOOK_ALIASES = {"chapter_05_patient2_breast_tissue_proba": "chapter_05_patient2_breast_tissue"}


def expected_figures() -> Dict[str, str]:
    """Every figure `make figures` guarantees -> the stage that draws it."""
    return {**BOOK_FIGURES, **OUR_FIGURES}


def stage_done(stage: str, paths: RunPaths) -> bool:
    """Whether a stage's main output exists (its figures are checked separately)."""
    markers: Dict[str, Callable[[RunPaths], List[Path]]] = {
        "prepare_data": lambda p: [p.patches_csv],
        "train": lambda p: [p.best_pt],
        "evaluate": lambda p: [p.predictions_csv],
        "landscape": lambda p: [p.figures_dir / f"{n}.png" for n, s in BOOK_FIGURES.items() if s == "landscape"],
        "explain": lambda p: [p.maps_npz],
        "sanity": lambda p: [p.sanity_dir / "metrics.csv", p.sanity_dir / "table_5_2.md"],
    }
    return all(path.exists() for path in markers[stage](paths))


def run_missing_stages(cfg, paths: RunPaths) -> List[str]:
    """Run, in order, the first stage whose output is missing and every stage after it."""
    ran: List[str] = []
    for stage in STAGE_ORDER:
        if ran or not stage_done(stage, paths):
            log.info("figures: running the %s stage (%s)", stage, "output missing" if not ran else "upstream re-ran")
            importlib.import_module(STAGES[stage]).run(cfg)
            ran.append(stage)
    return ran


def check_figures(figures_dir: Path) -> Dict[str, Path]:
    """{name: path} of every expected figure; a missing one raises naming the stage that draws it."""
    found, missing = {}, []
    for name, stage in expected_figures().items():
        path = figures_dir / f"{name}.png"
        if path.exists():
            found[name] = path
        else:
            missing.append((name, stage))
    if missing:
        listing = "; ".join(
            f"{n}.png (drawn by the {s} stage: `{MAKE_TARGETS.get(s, 'make ' + s)}`)" for n, s in missing
        )
        raise MissingArtifactError(
            f"{len(missing)} figure(s) missing from {figures_dir}: {listing}. Re-run that stage with the same "
            "run.dir (delete its output first if it ran with figures disabled)."
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
    head = "| figure | stage | ours |" + (" book |" if has_book else "")
    lines = ["# Figures", "", "Our figures next to the book's published ones (same file names)." if has_book
             else "The book's figures folder was not found, so only ours are listed.", "", head,
             "|---|---|---|" + ("---|" if has_book else "")]
    for name, stage in expected_figures().items():
        row = f"| {name} | {stage} | ![{name}]({name}.png) |"
        if has_book:
            book = book_counterpart(name, Path(book_dir))
            row += f" ![book]({Path(os.path.relpath(book, figures_dir)).as_posix()}) |" if book else " (none) |"
        lines.append(row)
    extra = sorted(p.name for p in figures_dir.glob("*.png") if p.stem not in expected_figures())
    if extra:
        lines += ["", "## Other figures of ours", ""] + [f"- [{n}]({n})" for n in extra]
    return "\n".join(lines) + "\n"


def run(cfg, book_dir: Optional[Path] = BOOK_FIGURES_DIR) -> Dict[str, Path]:
    paths = RunPaths.from_cfg(cfg)
    ran = run_missing_stages(cfg, paths)
    log.info("figures: stages run now: %s", ", ".join(ran) if ran else "none (all outputs present)")
    found = check_figures(paths.figures_dir)
    width = max(len(n) for n in found)
    log.info("figures:\n%s", "\n".join(f"  {n:<{width}}  {p}" for n, p in found.items()))
    book = Path(book_dir) if book_dir is not None and Path(book_dir).is_dir() else None
    if book is None:
        log.info("book figures folder %s not found; index.md lists ours only", book_dir)
    wrote(write_text_atomic(paths.figures_dir / "index.md", figure_index(paths.figures_dir, book)), "figure index")
    return found
