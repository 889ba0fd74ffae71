"""`python -m idc.bench [sections=loader,train,explain,sanity,atlas,gpu,fullsize,endtoend] [quick=1] [hydra overrides]`: run
benchmarks, update docs/benchmarks.md. Hydra overrides (e.g. `run.dir=... data.root=...`) go to the sections
that take them (fullsize, sanity, atlas, endtoend). `endtoend` (hours on a CPU) runs only when named.

Each section's markdown replaces the block between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`,
so sections can be re-measured one at a time without losing the others.
"""
from __future__ import annotations

import importlib
import logging
import platform
import re
import sys
from pathlib import Path

import torch

from idc.utils import write_text_atomic

SECTIONS = ["loader", "train", "explain", "sanity", "atlas", "gpu", "fullsize", "endtoend"]
TAKES_OVERRIDES = {"fullsize", "sanity", "atlas", "endtoend"}
ON_REQUEST = {"endtoend"}  # hours on a CPU: run only when named in sections=
DOC = Path("docs/benchmarks.md")
HEADER = "# Benchmarks\n\nWritten by `make bench` (`python -m idc.bench`); each section names the command that produced it.\n"


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{gpu}, torch {torch.__version__}, Python {platform.python_version()}")


def update_doc(text: str, name: str, body: str) -> str:
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def chosen_sections(opts: dict) -> list[str]:
    """The `sections=` asked for; by default every section but those that run only when named (ON_REQUEST)."""
    return opts.get("sections", ",".join(s for s in SECTIONS if s not in ON_REQUEST)).split(",")


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    sections = chosen_sections(opts)
    overrides = tuple(a for a in argv if a.split("=", 1)[0] not in ("sections", "quick"))
    if overrides and not TAKES_OVERRIDES & set(sections):
        sys.exit(f"overrides {list(overrides)} are only read by the section(s) {sorted(TAKES_OVERRIDES)}")
    quick = opts.get("quick", "0") not in ("0", "false", "")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        sys.exit(f"unknown bench section(s) {unknown}; choose from {SECTIONS}")
    text = DOC.read_text() if DOC.exists() else HEADER
    for name in sections:
        extra = {"overrides": overrides} if name in TAKES_OVERRIDES else {}
        body = importlib.import_module(f"idc.bench.{name}").run(quick=quick, **extra)
        head, _, rest = body.strip().partition("\n")  # the machine line goes under the section's heading
        body = f"{head}\n\nMachine: {machine()}.\n{rest}"
        text = update_doc(text, name, body)
        write_text_atomic(DOC, text)  # after each section, so a long run keeps what it measured
        print(body)
    logging.getLogger("idc").info("wrote %s", DOC)


if __name__ == "__main__":
    main(sys.argv[1:])
