"""Install the project with its dev extras into a venv, the way `make install` does.

uv installs what pip would: it gets pip's own index settings (extra index URLs, find-links and the
constraint file, from `pip config list`, which merges pip.conf and PIP_* variables) and pip's
resolution rule (`--index-strategy unsafe-best-match`: the best version across all indexes), so the
two resolve the same versions. uv downloads, unpacks and byte-compiles in parallel: on 2 CPU cores the
same 100 packages (torch 2.14.1 among them) took 46 s against pip's 69 s (2026-12-05, docs/benchmarks.md).
Where uv cannot be installed or fails, pip does the install, as before.

Run with the venv's own interpreter and only the standard library: `.venv/bin/python scripts/install_venv.py`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = "-e", ".[dev]"
# pip config key (without its "global."/":env:." prefix) -> uv flag
FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}


def pip_settings() -> dict[str, list[str]]:
    """pip's configured values per key, as `pip config list` prints them."""
    return parse_pip_config(subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                           text=True, check=False).stdout)


def parse_pip_config(out: str) -> dict[str, list[str]]:
    """`pip config list` lines (`global.find-links='/a /b'`, `:env:.constraint='/c'`) -> values per key that uv
    understands; a key set both in a file and in the environment takes the environment's, as pip does."""
    files: dict[str, list[str]] = {}
    env: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        scope, _, key = name.rpartition(".")
        if key not in FLAGS:
            continue
        values = ast.literal_eval(value).split()
        (env if scope == ":env:" else files)[key] = values
    return files | env


def uv_args(settings: dict[str, list[str]]) -> list[str]:
    args = ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]
    for key, values in settings.items():
        for value in values:
            args += [FLAGS[key], value]
    return args


def main() -> int:
    py = sys.executable
    uv = Path(py).parent / "uv"
    try:
        subprocess.run([py, "-m", "pip", "install", "-qq", "uv"], check=True)  # -qq: no warning per local index without uv
        subprocess.run([str(uv), "pip", "install", "--quiet", "--python", py, *uv_args(pip_settings()), *TARGET],
                       check=True, cwd=ROOT)
        return 0
    except (subprocess.CalledProcessError, OSError) as err:
        print(f"install_venv: uv could not install ({err}); installing with pip instead", file=sys.stderr)
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    return subprocess.run([py, "-m", "pip", "install", "--quiet", *TARGET], cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
