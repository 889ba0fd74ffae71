"""Small shared helpers: atomic writes, seeding, device choice, logging, hashing."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import socket
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from idc.errors import ConfigError, DiskFullError

log = logging.getLogger("idc")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, size_hint: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Nothing half-written is ever left under the final name: readers see the old file or the new one.
    A full disk ends in one `DiskFullError` line ("disk full while writing X; free N MB"); `size_hint`
    (the bytes the file needs, when the caller knows) makes N exact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_temp_tag()}", suffix=suffix or (path.suffix + ".tmp"),
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; give the artifact the mode any new file of this user gets (0644 for umask 022)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        full = disk_full_error(err, path, tmp, size_hint)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp.exists():
            tmp.unlink()


def disk_full_error(err: Exception, path: Path, tmp: Path, size_hint: Optional[int]) -> Optional[DiskFullError]:
    """The one-line error for a write that failed because the disk is full (ENOSPC, a quota, or an error
    raised while less than 1 MB was left), else None."""
    try:
        st = tmp.stat() if tmp.exists() else None
        # the bytes on disk: a sparse file (a memory-mapped cache) has fewer than its size
        written = 0 if st is None else min(st.st_size, st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size)
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    no_space = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not no_space and free >= 1 << 20:
        return None
    free_after = free + written  # the temp file is removed below
    mount = next((p for p in path.parents if os.path.ismount(p)), path.parent)
    if size_hint and size_hint > free_after:
        return DiskFullError(f"disk full while writing {path}; free {math.ceil((size_hint - free_after) / 1e6)} MB on "
                             f"{mount} (the file needs about {math.ceil(size_hint / 1e6)} MB, "
                             f"{free_after / 1e6:.1f} MB are free) and re-run")
    return DiskFullError(f"disk full while writing {path}; free more than {max(1, math.ceil(written / 1e6))} MB on "
                         f"{mount} (the disk filled after {written / 1e6:.1f} MB of it were written) and re-run")


@contextlib.contextmanager
def temp_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A new folder beside `final`, named like the temp files (host and pid in the name), removed when
    the block ends; the caller renames it onto `final` when complete. A process killed meanwhile (SIGTERM,
    SIGKILL) leaves it behind, and the next start removes it (`clean_stale_temp`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_temp_tag()}", suffix=".tmpdir", dir=final.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700; the folder becomes `final`
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The files a stage run vouches for without rewriting them (an unchanged index it kept, a cache it checked):
# idc.pipeline lists them, with the files the run wrote, in the stage's record.
_VOUCHED: list = []


@contextlib.contextmanager
def recording_outputs() -> Iterator[set]:
    """Collect the absolute paths passed to `vouch_output` inside the block."""
    vouched: set = set()
    _VOUCHED.append(vouched)
    try:
        yield vouched
    finally:
        _VOUCHED.remove(vouched)


def vouch_output(path: str | os.PathLike) -> Path:
    """Count `path` as an output of the running stage although this run did not rewrite it."""
    for vouched in _VOUCHED:
        vouched.add(os.path.abspath(path))
    return Path(path)


# Temp files are named .<final name>.idctmp-<host>-<pid>-<random><suffix>, so that a later run can tell
# the leftovers of a killed process (same host, pid no longer alive) from the files a live run is writing.
_TEMP_RE = re.compile(r"^\..+\.idctmp-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+\..*tmp")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_tag() -> str:
    return f"idctmp-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def clean_stale_temp(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temp files and folders under `root` (or directly in it) left by killed processes of this
    host (e.g. `kill -9` during a checkpoint save, SIGTERM while the viewer was built); those of live
    processes and of other hosts are kept. Returns what was removed."""
    removed, host = [], _host()
    for dirpath, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            m = _TEMP_RE.match(name)
            if m and m["host"] == host and not _pid_alive(int(m["pid"])):
                path = Path(dirpath) / name
                if name in dirs:
                    dirs.remove(name)  # not walked into
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
        if not recursive:
            break
    if removed:
        log.warning("removed %d stale temp file(s) or folder(s) of killed runs under %s, e.g. %s", len(removed), root,
                    removed[0])
    return removed


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_writable(folder: str | os.PathLike, key: str) -> Path:
    """Create `folder` and check that a file can be written in it, before any long work; else one clear
    error naming the config key that chose it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".write-check.{_temp_tag()}", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{key}: cannot write in {folder} ({err.strerror or type(err).__name__}); "
                          f"choose a writable folder (e.g. {key}=/tmp/idc-run) or fix its permissions") from None
    return folder
class Laps:
    """Wall seconds per phase, added up into `totals` (a stage's timing.json): `lap(phase)` charges the time
    since the previous lap (or since the clock was made) to `phase`; a phase seen again adds to its total."""

    def __init__(self, totals: dict):
        self.totals, self.last = totals, time.perf_counter()

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds
        return seconds


def write_npz_atomic(path: str | os.PathLike, arrays: dict, compress: bool = True) -> Path:
    """np.savez(_compressed) with fixed zip timestamps, so the same arrays give a byte-identical file
    (numpy stamps each member with the current time). Arrays are written in the order given."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    size = sum(np.asanyarray(v).nbytes for v in arrays.values())  # at most, uncompressed
    with atomic_path(path, suffix=".tmp.npz", size_hint=size) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path, size_hint=len(text.encode())) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


def write_csv_atomic(df, path: str | os.PathLike, **kwargs) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)
    return Path(path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto"):
    """'auto' picks cuda > mps > cpu; anything else is passed to torch.device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not DEVICE_RE.match(str(name)):
        raise ConfigError(f"device={name} is not known; use auto, cpu, cuda, cuda:<index> or mps")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was requested but CUDA is not available here; use device=auto or device=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                          "use device=cuda or a smaller index")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={name} was requested but MPS is not available here; use device=auto or device=cpu")
    return dev


DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def wrote(path: str | os.PathLike, what: str = "") -> Path:
    """Log a written artifact in one consistent format; a file that is not there is never reported as
    written (a warning says so instead)."""
    if Path(path).exists():
        log.info("wrote %s%s", Path(path), f" ({what})" if what else "")
    else:
        log.warning("did not write %s%s: it does not exist", Path(path), f" ({what})" if what else "")
    return Path(path)
