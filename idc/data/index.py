"""Index a patch set in the Kaggle layout: `<root>/<pid>/<0|1>/<pid>_idx5_x<X>_y<Y>_class<C>.png`.

Only each file's header is read (the PNG IHDR chunk, or PIL's `open` for anything else: no pixels)
plus its last bytes, where a complete PNG ends with the IEND chunk: that finds unreadable and truncated files in seconds
for the full 277k-file set (a thread pool overlaps the file reads). `verify=True` decodes every file
instead. Nothing is dropped silently: each skipped file is counted by reason and logged (so is each
patient left without patches); odd sizes and non-RGB modes are kept and counted. A patch position
(patient, x, y) found under both classes is dropped with both files: its label is contradictory.
Coordinates above `max_coordinate` are skipped: they would make a stitched slide figure enormous.
A folder or file that cannot be read (a symlink loop, no permission) is a counted skip, never the end of
the index; so is an image over PIL's decompression-bomb limit. Files in another format behind a `.png`
name (JPEG) are kept and counted.
"""
from __future__ import annotations

import logging
import os
import re
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd
from PIL import Image
from tqdm import tqdm

from idc.errors import DataError

log = logging.getLogger("idc")

NAME_RE = re.compile(r"^(?P<pid>\d+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<cls>[01])\.png$")
LAYOUT = "<root>/<patient_id>/<0|1>/<patient_id>_idx5_x<X>_y<Y>_class<C>.png"
COLUMNS = ["image_id", "patient_id", "x", "y", "target", "width", "height"]
SKIP_REASONS = ("bad_name", "class_folder_mismatch", "patient_folder_mismatch", "coordinate_out_of_range",
                "unreadable", "truncated", "conflicting_labels", "unreadable_entry", "too_large")
DEFAULT_MAX_COORDINATE = 20000  # px; the real slides stay below ~5000 (data.max_coordinate)
SKIP_NOTES = {
    "coordinate_out_of_range": " (x or y above data.max_coordinate={max_coordinate}; raise it if your slides are larger)",
    "conflicting_labels": " (the same patient/x/y under both classes: neither file is kept)",
    "unreadable_entry": " (a folder or file that cannot be read: a symlink loop or no permission)",
    "too_large": " (more pixels than PIL's decompression-bomb limit: not a patch)",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its (constant) CRC: the last 8 bytes of a whole PNG


@dataclass
class IndexReport:
    """What the indexer saw besides good patches: skipped files by reason, kept oddities by kind."""

    skipped: Dict[str, List[str]] = field(default_factory=lambda: {r: [] for r in SKIP_REASONS})
    non_rgb: Counter = field(default_factory=Counter)  # mode -> count (kept, converted to RGB)
    odd_size: Counter = field(default_factory=Counter)  # "WxH" -> count (kept, resized by transforms)
    not_png: Counter = field(default_factory=Counter)  # format -> count (kept: e.g. JPEG data named .png)
    patients_left_out: Dict[str, Dict[str, int]] = field(default_factory=dict)  # pid -> {reason: files}

    def counts(self) -> dict:
        return {
            "skipped": {r: len(v) for r, v in self.skipped.items()},
            "skipped_examples": {r: v[:5] for r, v in self.skipped.items() if v},
            "non_rgb_converted": dict(self.non_rgb),
            "non_50x50_kept": dict(self.odd_size),
            "not_png_kept": dict(self.not_png),
            "patients_left_out": self.patients_left_out,
        }

    def left_out_patients(self, scanned: Sequence[str], kept: set) -> None:
        """Record (and log, one line each) the scanned patient folders that kept no patch."""
        for pid in scanned:
            if pid in kept:
                continue
            reasons = {r: sum(f.split("/", 1)[0] == pid for f in files) for r, files in self.skipped.items()}
            reasons = {r: n for r, n in reasons.items() if n} or {"no_patch_files": 0}
            self.patients_left_out[pid] = reasons
            log.warning("patient %s left out: none of its files is usable (%s)", pid,
                        ", ".join(f"{r}: {n}" for r, n in reasons.items()))


def parse_name(name: str) -> Optional[dict]:
    """(patient_id, x, y, target) from a Kaggle patch file name, or None if it does not match."""
    m = NAME_RE.match(name)
    if not m:
        return None
    return {"patient_id": int(m["pid"]), "x": int(m["x"]), "y": int(m["y"]), "target": int(m["cls"])}


def _missing_root_error(root: Path, what: str) -> DataError:
    hint = ""
    nested = root / "IDC_regular_ps50_idx5"
    if nested.is_dir():
        hint = f" (it holds IDC_regular_ps50_idx5/: did you mean data.root={nested}?)"
    return DataError(
        f"data.root={root} {what}{hint}. Expected the Kaggle layout {LAYOUT}; "
        "set data.root=/path/to/IDC_regular_ps50_idx5 (the folder holding the patient folders)."
    )


def scan(folder: str, rel: str, report: IndexReport) -> List[Tuple[os.DirEntry, bool, bool]]:
    """(entry, is folder, is file) of each entry of `folder`; a folder or entry that cannot be read (a
    symlink loop, no permission) is counted as `unreadable_entry` under its path `rel`, and left out."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        report.skipped["unreadable_entry"].append(rel)
        return []
    out = []
    for e in entries:
        try:
            out.append((e, e.is_dir(), e.is_file()))
        except OSError:
            report.skipped["unreadable_entry"].append(f"{rel}/{e.name}" if rel else e.name)
    return out


def list_candidates(root: Path, num_patients: Optional[int], report: IndexReport,
                    max_coordinate: int = DEFAULT_MAX_COORDINATE) -> Tuple[List[Tuple[str, dict]], List[str]]:
    """Walk root/<pid>/<cls>/; return (relative path, parsed fields) of well-named files and the patient
    folders scanned."""
    if not root.is_dir():
        raise _missing_root_error(root, "does not exist or is not a folder")
    patient_dirs = sorted((e for e, is_dir, _ in scan(str(root), "", report) if is_dir and e.name.isdigit()),
                          key=lambda e: int(e.name))
    if not patient_dirs:
        raise _missing_root_error(root, "has no patient folders (named by patient id)")
    if num_patients is not None:
        patient_dirs = patient_dirs[: int(num_patients)]
    found = []
    for pdir in patient_dirs:
        for cdir, is_dir, _ in sorted(scan(pdir.path, pdir.name, report), key=lambda t: t[0].name):
            if not is_dir:
                continue
            for f, _, is_file in scan(cdir.path, f"{pdir.name}/{cdir.name}", report):
                if not is_file or not f.name.lower().endswith(".png"):
                    continue
                rel = f"{pdir.name}/{cdir.name}/{f.name}"
                meta = parse_name(f.name)
                if meta is None:
                    report.skipped["bad_name"].append(rel)
                elif str(meta["patient_id"]) != pdir.name:
                    report.skipped["patient_folder_mismatch"].append(rel)
                elif cdir.name not in ("0", "1") or int(cdir.name) != meta["target"]:
                    report.skipped["class_folder_mismatch"].append(rel)
                elif max(meta["x"], meta["y"]) > max_coordinate:
                    report.skipped["coordinate_out_of_range"].append(rel)
                else:
                    found.append((rel, meta))
    if not found and not any(report.skipped.values()):
        raise _missing_root_error(root, "contains no patch files")
    return found, [p.name for p in patient_dirs]


def _too_large(width: int, height: int) -> bool:
    return Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS


def _probe(path: str, verify: bool = False) -> Tuple[Optional[Tuple[int, int]], Optional[str], Optional[str], str]:
    """(size, mode, None, format) for a readable patch, else (None, None, skip reason, format).

    The common case, an 8-bit RGB PNG, is read from its IHDR chunk (the first 33 bytes) and its last
    32 bytes; PIL's own header parser costs several times more per file in Python. Other colour types
    and formats go to PIL, which names their mode; `verify` decodes every file with PIL. An image with
    more pixels than PIL's decompression-bomb limit is `too_large` (it is never decoded).
    """
    try:
        if not verify:
            with open(path, "rb") as fh:
                head = fh.read(33)
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 32))
                tail = fh.read()
            if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
                if PNG_END not in tail:
                    return None, None, "truncated", "PNG"
                width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
                if _too_large(width, height):
                    return None, None, "too_large", "PNG"
                if (depth, colour) == (8, 2):
                    return (width, height), "RGB", None, "PNG"
        with Image.open(path) as im:
            size, mode, fmt = im.size, im.mode, im.format or "unknown"
            if _too_large(*size):
                return None, None, "too_large", fmt
            if verify:
                im.load()
    except Image.DecompressionBombError:
        return None, None, "too_large", "unknown"
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError) for broken files
        truncated = verify and "truncated" in str(err).lower()
        return None, None, "truncated" if truncated else "unreadable", "unknown"
    return size, mode, None, fmt


def threaded_map(fn: Callable, items: Sequence, workers: int = 8, desc: str = "", chunk: int = 1024) -> Iterator:
    """`fn(item)` for every item, in order, with a tqdm bar. Chunks go to a thread pool (one future per
    file would cost more than reading its header), so file reads and decodes overlap across threads."""
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(total=len(items), desc=desc, unit="img") as bar:
        for results in pool.map(lambda part: [fn(x) for x in part], chunks):
            bar.update(len(results))
            yield from results


def index_patches(root, num_patients: Optional[int] = None, **kwargs) -> pd.DataFrame:
    """The patches table under `root` (the contract's form; skips are logged, see `index_with_report`)."""
    return index_with_report(root, num_patients, **kwargs)[0]


def drop_conflicting_labels(rows: List[dict], report: IndexReport) -> List[dict]:
    """Drop every patch whose (patient, x, y) also appears under the other class (keep neither: which
    label is right cannot be told), counting the files as `conflicting_labels`."""
    seen = Counter((r["patient_id"], r["x"], r["y"]) for r in rows)
    clash = {k for k, n in seen.items() if n > 1}
    if not clash:
        return rows
    report.skipped["conflicting_labels"] += [r["image_id"] for r in rows if (r["patient_id"], r["x"], r["y"]) in clash]
    return [r for r in rows if (r["patient_id"], r["x"], r["y"]) not in clash]


def index_with_report(root, num_patients: Optional[int] = None, workers: int = 8, verify: bool = False,
                      max_coordinate: int = DEFAULT_MAX_COORDINATE) -> Tuple[pd.DataFrame, IndexReport]:
    """Index every patch under `root`; returns the table (sorted by patient, y, x) and the report."""
    root = Path(root)
    report = IndexReport()
    found, scanned = list_candidates(root, num_patients, report, max_coordinate)
    rows = []
    probes = threaded_map(lambda rel: _probe(str(root / rel), verify), [rel for rel, _ in found], workers, "index patches")
    for (rel, meta), (size, mode, reason, fmt) in zip(found, probes):
        if size is None:
            report.skipped[reason].append(rel)
            continue
        if fmt != "PNG":
            report.not_png[fmt] += 1
        if mode != "RGB":
            report.non_rgb[mode] += 1
        if size != (50, 50):
            report.odd_size[f"{size[0]}x{size[1]}"] += 1
        rows.append({"image_id": rel, **meta, "width": size[0], "height": size[1]})
    rows = drop_conflicting_labels(rows, report)
    for reason, files in report.skipped.items():
        if files:
            log.warning("skipped %d file(s) under %s: %s%s (e.g. %s)", len(files), root, reason,
                        SKIP_NOTES.get(reason, "").format(max_coordinate=max_coordinate), files[0])
    report.left_out_patients(scanned, {r["image_id"].split("/", 1)[0] for r in rows})
    if report.non_rgb:
        log.warning("%d non-RGB patch(es) kept and converted to RGB: %s", sum(report.non_rgb.values()), dict(report.non_rgb))
    if report.not_png:
        log.warning("%d patch(es) named .png hold another format, kept: %s", sum(report.not_png.values()),
                    dict(report.not_png))
    if report.odd_size:
        log.info("%d patch(es) not 50x50 kept (resized by the transforms; cropped to the top-left 50x50 in "
                 "stitched slides): %s", sum(report.odd_size.values()), dict(report.odd_size))
    if not rows:
        raise _missing_root_error(root, f"has no readable, well-named patches ({report.counts()['skipped']})")
    df = pd.DataFrame(rows, columns=COLUMNS).sort_values(["patient_id", "y", "x", "target"], kind="stable")
    df = df.reset_index(drop=True)
    log.info("indexed %d patches of %d patients under %s", len(df), df["patient_id"].nunique(), root)
    return df, report
