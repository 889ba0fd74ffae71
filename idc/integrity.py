"""Integrity of a run directory: what each stage wrote is recorded by digest, and every reader of a
run-dir file turns damage into one line naming the file and the make target that writes it again.

- `file_digest(path)`: sha256, memoized on (path, size, mtime) so a checkpoint is hashed once per process;
  `output_digest(path)`: the same up to 256 MiB, the size and 64 sampled blocks beyond (the packed cache
  of the full set is 2 GB).
- `identity(path)`: (inode, mtime, size), to tell which files a stage run rewrote (`idc.pipeline`).
- `changed_output(record, root, target)`: the first output a stage record lists whose file differs now.
- Readers: `read_csv`, `read_json`, `read_npz`, `open_npy`; a damaged file raises `IntegrityError` (`damaged`).
- `check_finite`: NaN or infinite weights, probabilities or maps are refused before anything is written.
- `keep_previous(path, prev)`: a file about to be replaced (best.pt before a retrain) is kept under `prev`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from idc.errors import IntegrityError
from idc.paths import make_target, producer_of, require
from idc.utils import atomic_path, file_sha256

log = logging.getLogger("idc")
SAMPLED_ABOVE = 256 << 20  # bytes: larger outputs get a sampled digest
SAMPLES, SAMPLE_BYTES = 64, 1 << 16
_HASHES: Dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoized on (path, size, mtime) so a checkpoint is hashed once per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def output_digest(path: Path) -> str:
    """The digest a stage record keeps of an output: its sha256, or for a file over 256 MiB its size and
    the sha256 of 64 evenly spaced 64 KiB blocks (finds a cut or a replaced file, not every edit)."""
    path = Path(path)
    st = path.stat()
    if st.st_size <= SAMPLED_ABOVE:
        return file_digest(path)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, "sampled")
    if key not in _HASHES:
        h = hashlib.sha256(str(st.st_size).encode())
        with open(path, "rb") as fh:
            for i in range(SAMPLES):
                fh.seek((st.st_size - SAMPLE_BYTES) * i // (SAMPLES - 1))
                h.update(fh.read(SAMPLE_BYTES))
        _HASHES[key] = f"size+sampled:{h.hexdigest()}"
    return _HASHES[key]


def identity(path: Path) -> Optional[tuple]:
    """(inode, mtime, size) of a file, None when absent: a rewritten file (atomic rename) has a new one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def changed_output(record: Optional[dict], root: Path, target: str, only: Optional[str] = None) -> Optional[str]:
    """Why a file a stage record lists as its output no longer holds what the stage wrote (the first such
    file; `only`: check that one), or None. Records of older versions hold no output digests."""
    outputs = (record or {}).get("outputs")
    if not isinstance(outputs, dict):
        return None
    for rel, digest in outputs.items():
        path = Path(root) / rel
        if (only is None or rel == only) and path.is_file() and output_digest(path) != digest:
            return f"{rel} was changed after `{target}` wrote it (hand-edited, cut or replaced)"
    return None


# ---------------------------------------------------------------- readers
def damaged(path: Path, reason: str, fix: Optional[str] = None) -> IntegrityError:
    """The one-line error for a damaged file: what is wrong and how to write it again."""
    if fix is None:
        stage = producer_of(Path(path))
        fix = f"run `{make_target(stage)}` (same overrides) to write it again" if stage else \
            "write it again with the stage that made it"
    return IntegrityError(f"{path} is damaged ({reason}); {fix}")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_csv(path: Path, columns: Sequence[str] = (), fix: Optional[str] = None) -> pd.DataFrame:
    """A CSV of the run dir; empty, unparsable, lacking `columns`, or with a row cut short in them: damaged."""
    path = require(path)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise damaged(path, "it is empty", fix) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise damaged(path, f"not a readable CSV: {_first_line(err)}", fix) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise damaged(path, f"it lacks the columns {missing}", fix)
    holes = np.flatnonzero(df[list(columns)].isna().any(axis=1).to_numpy()) if len(columns) else []
    if len(holes):
        raise damaged(path, f"line {int(holes[0]) + 2} is incomplete: cut mid-line or edited", fix)
    return df


def read_json(path: Path, fix: Optional[str] = None):
    """A JSON file of the run dir (summary.json, metrics.json); a cut or edited one is damaged."""
    path = require(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise damaged(path, f"not readable JSON: {_first_line(err)}", fix) from None


def read_npz(path: Path, fix: Optional[str] = None, keys: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Every array of an .npz file (maps, masks), or only those of `keys` it holds (the others are not
    decompressed); a cut or corrupt file is damaged."""
    path = require(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if keys is None else [k for k in keys if k in z.files])}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise damaged(path, f"not a complete .npz file: {_first_line(err)}", fix) from None


def open_npy(path: Path, shape: tuple, dtype=np.uint8, fix: Optional[str] = None) -> np.ndarray:
    """A memory-mapped .npy array of the expected shape and dtype; a cut or foreign file is damaged."""
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        size = os.path.getsize(path)
        reason = f"cut: {size / 1e6:.1f} of {want / 1e6:.1f} MB" if size < want else _first_line(err)
        raise damaged(path, reason, fix) from None
    if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
        raise damaged(path, f"it holds {arr.dtype} {arr.shape}, not {np.dtype(dtype)} {tuple(shape)}", fix)
    return arr


def check_finite(values, what: str, fix: str) -> None:
    """Refuse NaN or infinite values (weights, probabilities, maps) before anything is written from them."""
    arr = np.asarray(values)
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise IntegrityError(f"{what} hold {bad} NaN or infinite value(s) of {arr.size}; nothing was written. {fix}")


def keep_previous(path: Path, prev: Path) -> Optional[Path]:
    """Keep `path` (about to be replaced) as `prev`: a hard link where the file system allows, else a copy."""
    path, prev = Path(path), Path(prev)
    if not path.is_file():
        return None
    with atomic_path(prev) as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
    return prev
