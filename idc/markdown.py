"""Markdown, the one way: `markdown_table` for every table a stage or a bench section writes
(Table 5.1 and 5.2, the leaderboard, the figure index, docs/benchmarks.md), `frame_table` for a
DataFrame, and `markdown_to_html` for the subset our stages write (the report and the viewer show them).
"""
from __future__ import annotations

import html
import re
from typing import Iterable, List, Sequence

RULES = {"l": "---", "r": "---:", "c": ":---:"}


def _row(cells: Sequence[str]) -> str:
    """`| a | b |`; an empty cell is `| |`."""
    return " ".join(["|", *(f"{c} |" if c else "|" for c in cells)])


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A pipe table: `header`, a rule (`align`: one letter per column, l / r / c; default left) and one line
    per row; cells are written with str()."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} must have one letter per column ({len(header)})")
    lines = [_row([str(h) for h in header]), "|" + "".join(f"{RULES[a]}|" for a in align)]
    lines += [_row([str(c) for c in r]) for r in rows]
    return "\n".join(lines)


def frame_table(table) -> str:
    """A DataFrame as a pipe table: floats with 3 decimals, `|` inside a cell escaped."""
    body = [[f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|") for v in row]
            for row in table.itertuples(index=False)]
    return markdown_table(list(table.columns), body)


# ---------------------------------------------------------------- to HTML
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
