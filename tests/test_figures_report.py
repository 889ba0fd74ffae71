"""figures.run (stage orchestration, figure check, index.md) and report.run (static HTML page)."""
from __future__ import annotations

import json
import subprocess
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from idc import figures, report
from idc.paths import MissingArtifactError, RunPaths, declared
from tests.helpers import compose_cfg, copy_run
from tests.helpers.kaggle import write_png

CHROMIUM = Path("/usr/bin/chromium")


def fake_figures(figures_dir: Path, skip: str | None = None) -> None:
    for name in figures.expected_figures():
        if name != skip:
            write_png(figures_dir / f"{name}.png", size=(8, 8), value=120)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]


def referenced_files(html_path: Path) -> list[Path]:
    parser = Links()
    parser.feed(html_path.read_text())
    for ref in parser.refs:
        assert "://" not in ref and not ref.startswith("/"), f"non-relative link {ref}"
    return [html_path.parent / ref for ref in parser.refs]


def test_missing_figure_names_its_stage(tmp_path):
    paths = RunPaths(tmp_path)
    fake_figures(paths.figures_dir, skip="chapter_05_pr_curve")
    with pytest.raises(MissingArtifactError, match=r"chapter_05_pr_curve.png \(drawn by the evaluate stage: `make evaluate`\)"):
        figures.check_figures(paths)
    write_png(paths.figure("chapter_05_pr_curve"))
    assert len(figures.check_figures(paths)) == len(figures.expected_figures())


def test_index_pairs_with_book_figures_by_relative_path(tmp_path):
    figs, book = tmp_path / "run" / "figures", tmp_path / "ref" / "book-figures"
    fake_figures(figs)
    write_png(figs / "landscape_12930.png", size=(8, 8))
    write_png(book / "chapter_05_pr_curve.png", size=(8, 8))
    write_png(book / "chapter_05_patient2_breast_tissue.png", size=(8, 8))  # the book repo's name for our *_proba
    md = figures.figure_index(figs, book)
    assert "| chapter_05_pr_curve | evaluate | ![chapter_05_pr_curve](chapter_05_pr_curve.png) | " \
           "![book](../../ref/book-figures/chapter_05_pr_curve.png) |" in md
    assert "../../ref/book-figures/chapter_05_patient2_breast_tissue.png" in md
    assert "| chapter_05_target_pc | prepare_data | ![chapter_05_target_pc](chapter_05_target_pc.png) | (none) |" in md
    assert "- [landscape_12930.png](landscape_12930.png)" in md
    no_book = figures.figure_index(figs, None)
    assert "book |" not in no_book and "not found" in no_book


def test_figures_runs_the_stages_whose_outputs_are_missing_or_stale(tmp_path, monkeypatch):
    from idc import pipeline
    from idc.paths import stage_artifacts

    cfg = compose_cfg(tmp_path)
    paths = RunPaths(tmp_path)
    calls = []

    def fake_stage(stage):
        def run(c):
            calls.append(stage)
            for a in stage_artifacts(stage):
                (paths.root / a.rel).parent.mkdir(parents=True, exist_ok=True)
                (paths.root / a.rel).write_text(f"{stage} run {len(calls)}")  # new content: a new hash
        return types.SimpleNamespace(run=run)

    monkeypatch.setattr(pipeline.importlib, "import_module",
                        lambda module: fake_stage(next(n for n, s in pipeline.STAGES.items() if s.module == module)))
    for stage in ("prepare_data", "train", "evaluate", "landscape", "explain", "sanity", "leaderboard"):
        pipeline.run_one(stage, cfg, paths)
    fake_figures(paths.figures_dir)
    calls.clear()
    paths.predictions_csv.unlink()  # evaluate's output is gone: it and every stage reading it re-run
    pipeline.build("figures", cfg)
    # not sanity and leaderboard: they score the evaluation cohort (data/cohort.csv), not the predictions
    assert calls == ["evaluate", "landscape", "explain", "figures"]
    calls.clear()
    assert pipeline.build("figures", cfg) == {} and calls == []


def test_figures_stage_checks_figures_and_writes_the_index(tmp_path):
    fake_figures(RunPaths(tmp_path).figures_dir)
    found = figures.run(types.SimpleNamespace(run=types.SimpleNamespace(dir=str(tmp_path))),
                        book_dir=tmp_path / "no-such-folder")
    assert set(found) == set(figures.expected_figures())
    assert (RunPaths(tmp_path).figure_index_md).exists()


def test_markdown_to_html_renders_tables_and_escapes():
    out = report.markdown_to_html("# Title\n\nsome **bold** <b>\n\n| a | b |\n|---|---|\n| 1 | `x` |\n")
    assert "<h3>Title</h3>" in out and "<strong>bold</strong> &lt;b&gt;" in out
    assert "<th>a</th><th>b</th>" in out and "<td>1</td><td><code>x</code></td>" in out
    assert "---" not in out


def fake_run(root: Path) -> RunPaths:
    paths = RunPaths(root)
    paths.data_dir.mkdir(parents=True)
    paths.summary_json.write_text(json.dumps({
        "source": "synthetic", "root": "/data/x", "patients": 6, "patches": 900,
        "splits": {"train": {"patients": 3, "patches": 400, "patient_ids": list(range(10, 30))}},
        "skipped": {"bad_name": 2}, "skipped_examples": {"bad_name": ["<b>odd.png"]}}))
    paths.eval_dir.mkdir()
    paths.table_5_1.write_text("| | precision % | recall % |\n|---|---|---|\n| baseline | 28.6 | 100 |\n")
    paths.model_dir.mkdir()
    paths.history_csv.write_text("epoch,train_loss,train_acc,seconds,images_per_s,val_loss,val_f1\n0,0.5,0.8,12.5,400,0.4,0.7\n")
    paths.sanity_dir.mkdir()
    paths.table_5_2.write_text("# Table 5.2\n\n| method | ours |\n|---|---|\n| Grad-CAM | pass |\n")
    paths.leaderboard_md.write_text("# Which attribution method should I use? (leaderboard)\n\n| row | kind |\n|---|---|\n"
                                    "| Grad-CAM | method |\n")
    fake_figures(paths.figures_dir, skip="chapter_05_loss_curve_step")
    write_png(paths.path("landscape_png", pid=7), size=(8, 8), value=30)
    return paths


def test_report_is_static_with_relative_links_that_exist(tmp_path):
    paths = fake_run(tmp_path / "run")
    out = report.run(types.SimpleNamespace(run=types.SimpleNamespace(dir=str(paths.root))))
    page = out.read_text()
    assert out == paths.report_html and "<script" not in page.lower()
    assert "<title>IDC saliency mapping: synthetic data</title>" in page and "run run" not in page
    assert "<td>train</td><td>3</td><td>400</td>" in page and "splits.train" not in page
    assert "20, 21 ... and 8 more" in page  # long id lists are cut
    assert "<td>skipped: bad name</td><td>2</td><td>&lt;b&gt;odd.png</td>" in page
    assert "viewer/index.html) not found: run <code>make view</code>" in page
    assert "<td>baseline</td><td>28.6</td><td>100</td>" in page and "<td>Grad-CAM</td><td>pass</td>" in page
    # the leaderboard, and the training history beside the loss curves
    assert "Which attribution method" in page and "<td>Grad-CAM</td><td>method</td>" in page
    assert "<th>epoch</th><th>train loss</th>" in page and "<td>1</td><td>0.500</td><td>0.800</td>" in page
    assert "chapter_05_loss_curve_step.png not found: run <code>make evaluate</code>" in page
    assert "localization.md not found" in page and "landscape_7" in page
    (paths.root / "viewer").mkdir()
    (paths.root / "viewer" / "index.html").write_text("<html></html>")
    out = report.run(types.SimpleNamespace(run=types.SimpleNamespace(dir=str(paths.root))))
    assert '<a href="viewer/index.html">' in out.read_text()
    refs = referenced_files(out)
    assert len(refs) >= len(figures.expected_figures())
    assert all(r.exists() for r in refs), [r for r in refs if not r.exists()]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed: `make browser` installs it (root; .ci/run does)")
def test_report_renders_in_headless_chromium(tmp_path):
    paths = fake_run(tmp_path / "run")
    out = report.run(types.SimpleNamespace(run=types.SimpleNamespace(dir=str(paths.root))))
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,1600", out.resolve().as_uri()],
        check=True, timeout=120, capture_output=True,
    )
    import matplotlib.pyplot as plt

    img = plt.imread(shot)[..., :3]
    assert img.shape[0] > 100 and img.std() > 0.01  # not a blank page


@pytest.mark.slow
def test_figures_and_report_stages_on_the_tiny_run(tiny_evaluated, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_evaluated, tmp_path / "run")
    # the sanity stage's own tests cover every method; here it only has to produce its files, quickly
    cfg = compose_cfg(run_dir, "sanity.methods=[vanilla_backprop,gradcam]", "leaderboard.methods=[gradcam]",
                      "leaderboard.randomized_controls=false", data_dir=tiny_data_dir)
    from idc.pipeline import build

    ran = build("figures", cfg)  # the stages the tiny run lacks, then the figures stage
    assert list(ran) == ["landscape", "explain", "sanity", "leaderboard", "figures"]
    assert set(ran["figures"]) == set(figures.expected_figures())
    assert (run_dir / "figures" / "index.md").exists()
    ran = build("report", cfg)
    assert list(ran) == ["report"]  # every stage it reports on is up to date
    page = ran["report"]
    assert all(r.exists() for r in referenced_files(page))
    # every section it reports on is there; only the viewer (make view, not run here) is absent
    text = page.read_text().replace("viewer/index.html) not found: run <code>make view</code>", "")
    assert "not found: run" not in text
    # the registry declares every file the stages wrote (besides Hydra's logs/ and the stage records .stages/)
    written = [p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()]
    undeclared = [rel for rel in written if not rel.startswith((".stages/", "logs/")) and declared(rel) is None
                  and RunPaths(run_dir).producer(run_dir / rel) is None]
    assert written and not undeclared, undeclared
