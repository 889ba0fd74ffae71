"""The attribution panel of one explained patch, as HTML built here (everything from the data escaped):
the patch, and per method its grey map, its overlay, and the method's scores and sanity verdicts
from the sanity stage's tables when they exist (else a note naming `make sanity` or `make leaderboard`).
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from idc.overview import html_table
from idc.paths import BY_KEY, make_target

CARD = ("display:inline-block;vertical-align:top;width:226px;margin:2px;padding:4px;"
        "border:1px solid #ccc;border-radius:4px;font-size:11px")
IMG = "width:100px;height:100px;image-rendering:pixelated;margin:1px;border:1px solid #999"


def _key(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def method_rows(table: Optional[pd.DataFrame], method: str, title: str) -> Optional[pd.DataFrame]:
    """Rows of a per-method table (column `method`, else its first column) naming `method` by
    registry key or by title, compared without case and punctuation ('Grad-CAM' = 'gradcam')."""
    if table is None or table.empty:
        return None
    col = "method" if "method" in table.columns else table.columns[0]
    names = table[col].map(_key)
    return table[names.isin({_key(method), _key(title)})].drop(columns=[col])


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.3g}"
    return str(v)


def score_block(rows: Optional[pd.DataFrame], what: str, source: str) -> str:
    """One row (the leaderboard's) as measure/value pairs, to fit a card; several rows (one per
    randomization test) as a table, `value [ci_low, ci_high]` joined when those columns exist."""
    if rows is None:  # the whole table is absent: said once, above the cards
        return ""
    if rows.empty:
        return f"<div>{html.escape(what)}: not in {html.escape(source)}.</div>"
    if len(rows) == 1:
        pairs = [(k, _fmt(v)) for k, v in rows.iloc[0].items() if k != "kind"]
        return html_table(["measure", "value"], pairs, what)
    if {"value", "ci_low", "ci_high"} <= set(rows.columns):
        ci = [f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]" if _fmt(lo) and _fmt(hi) else _fmt(v)  # no CI (one patient): the value
              for v, lo, hi in zip(rows["value"], rows["ci_low"], rows["ci_high"])]
        rows = rows.drop(columns=["value", "ci_low", "ci_high", "n", "n_degenerate"], errors="ignore")
        rows.insert(min(1, rows.shape[1]), "value [95% CI]", ci)
    return html_table(list(rows.columns), [[_fmt(v) for v in r] for r in rows.itertuples(index=False)], what)


def _img(src: Path, root: Path, element_id: str, alt: str) -> str:
    rel = html.escape(src.relative_to(root).as_posix())
    return f'<img id="{html.escape(element_id)}" src="{rel}" alt="{html.escape(alt)}" title="{html.escape(alt)}" style="{IMG}">'


def patch_panel(rec, assets: dict, methods: dict, root: Path, leaderboard=None, randomization=None) -> str:
    """`rec`: the patch's row (image_id, patient_id, target, proba, pred, outcome, explained_class,
    row); `assets`: explained_patch_assets' paths; `methods`: key -> title; `root`: the viewer folder.
    Element ids are `attr-<row>` (panel) and `attr-<row>-<method>-gray|overlay` (maps)."""
    k = int(rec["row"])
    facts = html_table(
        ["image id", "patient", "label", "P(IDC)", "prediction", "outcome", "maps explain class"],
        [[rec["image_id"], int(rec["patient_id"]), int(rec["target"]), f"{float(rec['proba']):.3f}",
          int(rec["pred"]), str(rec["outcome"]).upper(), int(rec["explained_class"])]])
    board_csv, verdicts_csv = BY_KEY["leaderboard_csv"].rel, BY_KEY["randomization_csv"].rel
    cards = []
    for m, title in methods.items():
        gray, over = assets[m]
        cards.append(
            f'<div class="method" id="attr-{k}-{html.escape(m)}" style="{CARD}"><b>{html.escape(title)}</b><br>'
            + _img(gray, root, f"attr-{k}-{m}-gray", f"{title}: grey map")
            + _img(over, root, f"attr-{k}-{m}-overlay", f"{title}: overlay")
            + score_block(method_rows(leaderboard, m, title), "scores", board_csv)
            + score_block(method_rows(randomization, m, title), "sanity verdicts", verdicts_csv)
            + "</div>")
    head = _img(assets["patch"], root, f"attr-{k}-patch", "the patch")
    absent = [key for table, key in ((leaderboard, "leaderboard_csv"), (randomization, "randomization_csv")) if table is None]
    target = make_target(BY_KEY[absent[0]].stage) if absent else ""  # the later stage first: it runs the earlier one
    note = (f'<p class="missing">Method scores and sanity verdicts: no {" or ".join(BY_KEY[k].rel for k in absent)}; '
            f"run <code>{target}</code> to add them.</p>") if absent else ""
    return (f'<div class="attribution" id="attr-{k}" data-image-id="{html.escape(str(rec["image_id"]))}">'
            f"<h3>Attribution maps</h3>{head}{facts}{note}<div>{''.join(cards)}</div></div>")
