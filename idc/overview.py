"""The run's overview as tables a person reads (data set, splits, skipped files, what the run holds),
shared by the viewer's Overview tab and the static report. Every value from the data is escaped.
"""
from __future__ import annotations

import html
import logging
from typing import Iterable, List, Optional, Sequence

from idc.integrity import read_json
from idc.paths import BY_KEY, RunPaths, make_target

log = logging.getLogger("idc")
SHOWN_IDS = 12
# Table and note styles of the overview, the report and the viewer's panels (one look everywhere).
TABLE_CSS = """
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
caption { text-align: left; font-weight: bold; padding: 2px 0; }
th, td { border: 1px solid #bbb; padding: 3px 7px; text-align: left; } th { background: #eee; }
.missing { color: #a33; font-style: italic; } code { background: #f3f3f3; padding: 0 3px; }
"""  # patient ids listed per split before "... and N more"


def missing_note(what: str, target: str) -> str:
    return f'<p class="missing">{html.escape(what)} not found: run <code>{html.escape(target)}</code> first.</p>'


def html_table(header: Sequence[str], rows: Iterable[Sequence], caption: Optional[str] = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{body}</table>"


def _pct(rate) -> str:
    return "" if rate is None else f"{100 * float(rate):.1f}"


def _ids(ids: List[int]) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:SHOWN_IDS])
    return shown + (f" ... and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def dataset_tables(summary: dict) -> str:
    """data/summary.json (written by prepare_data) as three tables."""
    data = html_table(
        ["source", "root", "patients", "patches", "IDC-negative", "IDC-positive", "IDC-positive %"],
        [[summary.get("source", ""), summary.get("root", ""), summary.get("patients", ""), summary.get("patches", ""),
          summary.get("idc_negative", ""), summary.get("idc_positive", ""), _pct(summary.get("positive_rate"))]],
        "Data set")
    splits = html_table(
        ["split", "patients", "patches", "IDC-negative", "IDC-positive", "IDC-positive %", "patient ids"],
        [[name, s.get("patients", ""), s.get("patches", ""), s.get("idc_negative", ""), s.get("idc_positive", ""),
          _pct(s.get("positive_rate")), _ids(s.get("patient_ids", []))]
         for name, s in summary.get("splits", {}).items()],
        "Patient-level split")
    examples = summary.get("skipped_examples", {})
    rows = [[f"skipped: {reason.replace('_', ' ')}", n, ", ".join(map(str, examples.get(reason, [])))]
            for reason, n in summary.get("skipped", {}).items()]
    rows += [[f"converted to RGB from {mode}", n, ""] for mode, n in summary.get("non_rgb_converted", {}).items()]
    rows += [[f"kept at size {size} (edge patches)", n, ""] for size, n in summary.get("non_50x50_kept", {}).items()]
    files = html_table(["files", "count", "examples"], rows, "Files skipped or adapted while indexing")
    return data + splits + files


# What the viewer and the report show, in stage order (registry keys).
SHOWN_ARTIFACTS = ["patches_csv", "best_pt", "predictions_csv", "table_5_1", "maps_npz", "table_5_2",
                   "randomization_csv", "leaderboard_csv", "viewer_html"]


def artifact_table(paths: RunPaths) -> str:
    """One row per artifact of SHOWN_ARTIFACTS: its file and whether it exists (else its make target)."""
    rows = []
    for key in SHOWN_ARTIFACTS:
        rel, stage = BY_KEY[key].rel, BY_KEY[key].stage
        status = "present" if (paths.root / rel).exists() else f"missing: run {make_target(stage)}"
        rows.append([rel, stage, status])
    return html_table(["file (under the run dir)", "written by", "status"], rows, "What this run holds")


def overview_html(paths: RunPaths) -> str:
    if not paths.summary_json.exists():
        data = missing_note(paths.summary_json.name, make_target(BY_KEY["summary_json"].stage))
    else:
        log.info("read %s", paths.summary_json)
        data = dataset_tables(read_json(paths.summary_json))
    return data + artifact_table(paths)


def run_title(paths: RunPaths, data_name: Optional[str] = None) -> str:
    """'IDC saliency mapping: <data set> data' (the config's data.name, else summary.json's source)."""
    if not data_name and paths.summary_json.exists():
        data_name = read_json(paths.summary_json).get("source")
    return f"IDC saliency mapping: {data_name} data" if data_name else "IDC saliency mapping"
