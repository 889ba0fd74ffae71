"""The viewer stage (`make view`): page and assets from a tiny run, absent inputs, escaping, and the
page driven in headless Chromium through its own controls (skipped where Chromium is absent)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from idc.viewer import browser
from idc.viewer import stage as viewer
from idc.paths import RunPaths, declared
from idc.viewer.inputs import patch_table, viewer_patients
from idc.viewer.panels import method_rows, patch_panel

from tests.helpers import compose_cfg, copy_run

METHODS = ["lime", "vanilla_backprop", "guided_backprop", "integrated_gradients", "smoothgrad", "gradcam",
           "guided_gradcam", "gradcam_pp", "scorecam", "layercam", "rise"]


def fake_results(run_dir: Path) -> pd.DataFrame:
    """Predictions for the test patients (every outcome occurs) and grey maps of all eleven methods for
    one patch of each test patient; the viewer only reads these files, so they need no model."""
    paths = RunPaths(run_dir)
    patches = pd.read_csv(paths.patches_csv)
    test = patches[patches["split"] == "test"].reset_index(drop=True)
    rng = np.random.default_rng(0)
    proba = np.clip(0.55 * test["target"] + rng.uniform(0, 0.5, len(test)), 0, 1)
    pred = test.assign(proba=proba, pred=(proba >= 0.5).astype(int))[["image_id", "patient_id", "x", "y", "target", "proba", "pred"]]
    paths.eval_dir.mkdir(parents=True, exist_ok=True)
    pred.to_csv(paths.predictions_csv, index=False)
    chosen = pred.groupby("patient_id").head(1).reset_index(drop=True)
    outcome = {(1, 1): "tp", (0, 0): "tn", (0, 1): "fp", (1, 0): "fn"}
    chosen = chosen.assign(outcome=[outcome[(t, p)] for t, p in zip(chosen["target"], chosen["pred"])],
                           explained_class=chosen["pred"])
    paths.explain_dir.mkdir(parents=True, exist_ok=True)
    chosen[["image_id", "patient_id", "target", "pred", "proba", "outcome", "explained_class"]].to_csv(
        paths.explain_index_csv, index=False)
    np.savez(paths.maps_npz, **{f"{m}/gray": rng.uniform(0, 1, (len(chosen), 50, 50)).astype(np.float32) for m in METHODS})
    return chosen


def fake_atlas(run_dir: Path) -> None:
    """What `make atlas` leaves for the viewer (atlas/summary.json, atlas/patients/<pid>/maps.npz + index.csv),
    for every test patient: Grad-CAM evidence rising from left to right across each patch, none in IG."""
    paths = RunPaths(run_dir)
    patches = pd.read_csv(paths.patches_csv)
    test = patches[patches["split"] == "test"]
    pids = sorted(int(p) for p in test["patient_id"].unique())
    ramp = np.broadcast_to(np.linspace(-1, 1, 50, dtype=np.float32), (50, 50))
    for pid in pids:
        sub = test[test["patient_id"] == pid]
        folder = paths.path("atlas_patient_dir", pid=pid)
        folder.mkdir(parents=True)
        sub[["image_id", "patient_id", "x", "y", "width", "height", "target"]].to_csv(folder / "index.csv", index=False)
        np.savez(folder / "maps.npz", gradcam=np.repeat(ramp[None], len(sub), 0),
                 integrated_gradients=np.zeros((len(sub), 50, 50), np.float32))
    summary = {"methods": ["gradcam", "integrated_gradients"], "patients": pids, "display_sigma": 0.0,
               "scale": {"gradcam": 1.0, "integrated_gradients": 1.0}}
    paths.atlas_summary_json.write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def viewer_run(tmp_path_factory, tiny_prepared, tiny_data_dir):
    run_dir = copy_run(tiny_prepared, tmp_path_factory.mktemp("viewer") / "run")
    chosen = fake_results(run_dir)
    fake_atlas(run_dir)
    page = viewer.run(compose_cfg(run_dir, data_dir=tiny_data_dir))
    return run_dir, page, chosen


def test_page_and_assets(viewer_run):
    run_dir, page, chosen = viewer_run
    assert page == run_dir / "viewer" / "index.html"
    text = page.read_text()
    assert "cdn.bokeh.org" not in text  # bokeh's JavaScript is inline: the page works offline
    for pid in chosen["patient_id"]:
        script = run_dir / "viewer" / "assets" / f"patient_{pid}.js"
        assert script.exists() and "data:image/jpeg;base64," in script.read_text()
        assert "data:image/png;base64," in script.read_text()  # the synthetic evidence mask
    for k in range(len(chosen)):
        for m in METHODS:
            assert (run_dir / "viewer" / "assets" / "explain" / f"{k:04d}_{m}_overlay.png").exists()
    for label in ("P(IDC) heat map", "errors (FP / FN outlines)", "evidence mask"):
        assert label in text
    assert "make sanity" in text  # scores and verdicts: absent, named by their make target
    assert "atlas-method" in text and "Attribution landscape (make atlas)" in text
    assert not list(run_dir.glob(".viewer.*")), "temporary folders left behind"
    viewer_files = [p.relative_to(run_dir).as_posix() for p in (run_dir / "viewer").rglob("*") if p.is_file()]
    assert viewer_files and all(declared(rel) for rel in viewer_files)  # the registry declares the page and assets


def test_absent_predictions_and_explanations_are_notes(tiny_prepared, tiny_data_dir, tmp_path):
    run_dir = copy_run(tiny_prepared, tmp_path / "run")
    text = viewer.run(compose_cfg(run_dir, data_dir=tiny_data_dir)).read_text()
    assert "run `make evaluate` to add it" in text and "run `make explain` to add it" in text
    assert "errors (FP / FN outlines)" not in text and "P(IDC) heat map\"" not in text
    assert "false positive" not in text and "heat map = P(IDC)" not in text  # the legend names only present layers


def test_legend_names_only_the_layers_present():
    from idc.viewer.page import legend

    full, bare = legend(True, True), legend(False, False)
    assert all(k in full for k in ("IDC label", "heat map", "false positive", "false negative", "evidence"))
    assert "IDC label" in bare and "explained patch" in bare
    assert not any(k in bare for k in ("heat map", "false positive", "evidence"))
    assert "evidence" in legend(False, True) and "evidence" not in legend(True, False)


def test_view_runs_after_the_stages_it_shows():
    from idc.paths import BY_KEY
    from idc.pipeline import producers

    assert producers("view") == ["prepare_data", "evaluate", "explain", "sanity", "leaderboard"]
    assert BY_KEY["viewer_html"].stage == "view"


def test_patch_table_outcomes_and_patients():
    patches = pd.DataFrame({"image_id": list("abcdef"), "patient_id": [1, 1, 1, 1, 2, 3], "x": [1, 51, 1, 51, 1, 1],
                            "y": [1, 1, 51, 51, 1, 1], "target": [1, 0, 0, 1, 1, 0],
                            "split": ["test"] * 4 + ["train", "val"]})
    pred = pd.DataFrame({"image_id": list("abcde"), "patient_id": [1, 1, 1, 1, 2], "proba": [.9, .1, .8, .2, .7],
                         "pred": [1, 0, 1, 0, 1]})
    explained = pd.DataFrame({"image_id": ["c"], "row": [0]})
    assert viewer_patients(patches, None) == [1]
    assert viewer_patients(patches, pred) == [1, 2]  # a train patient with predictions is shown too
    t = patch_table(patches, pred, explained, [2, 1])
    assert t["image_id"].tolist() == list("eabcd")
    assert t["outcome"].tolist() == ["TP", "TP", "TN", "FP", "FN"]
    assert t["explain_row"].tolist() == [-1, -1, -1, 0, -1]
    assert t["cache_row"].tolist() == [4, 0, 1, 2, 3]
    assert patch_table(patches, None, None, [1])["outcome"].eq("no prediction").all()


def test_panel_escapes_ids_and_matches_method_names(tmp_path):
    hostile = '<img src=x onerror="alert(1)">&'
    rec = pd.Series({"image_id": hostile, "patient_id": 7, "target": 1, "proba": 0.9, "pred": 1, "outcome": "tp",
                     "explained_class": 1, "row": 3})
    files = {"patch": tmp_path / "p.png", "gradcam": (tmp_path / "g.png", tmp_path / "o.png")}
    # the sanity stage's tables: leaderboard.csv (first column `row`), randomization.csv (one row per test)
    board = pd.DataFrame({"row": ["Grad-CAM", "LIME", "Grad-CAM (randomized)"], "kind": ["method", "method", "randomized"],
                          "pointing game": ["0.81 [0.70, 0.90]", "0.50 [0.4, 0.6]", "0.3 [0.2, 0.4]"]})
    html = patch_panel(rec, files, {"gradcam": "Grad-CAM"}, tmp_path, leaderboard=board)
    assert hostile not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in html
    assert 'id="attr-3-gradcam-gray"' in html
    assert "<td>pointing game</td><td>0.81 [0.70, 0.90]</td>" in html and "0.50 [0.4" not in html and "0.3 [" not in html
    assert "no sanity/randomization.csv; run <code>make sanity</code>" in html
    html = patch_panel(rec, files, {"gradcam": "Grad-CAM"}, tmp_path)  # no scores either: the later stage
    assert "no sanity/leaderboard.csv or sanity/randomization.csv; run <code>make leaderboard</code>" in html
    rand = pd.DataFrame({"method": ["gradcam"] * 2, "test": ["smprt", "emprt"], "value": [0.21234, 0.9],
                         "ci_low": [0.1, 0.8], "ci_high": [0.3, 1.0], "n": [8, 8], "n_degenerate": [0, 0],
                         "verdict": ["pass", "fail"]})
    html = patch_panel(rec, files, {"gradcam": "Grad-CAM"}, tmp_path, leaderboard=board, randomization=rand)
    assert "<td>smprt</td><td>0.212 [0.1, 0.3]</td><td>pass</td>" in html and "make sanity" not in html
    one_patient = rand.assign(ci_low=np.nan, ci_high=np.nan, verdict="invalid (1 patient: no CI)")
    html = patch_panel(rec, files, {"gradcam": "Grad-CAM"}, tmp_path, leaderboard=board, randomization=one_patient)
    assert "<td>smprt</td><td>0.212</td><td>invalid (1 patient: no CI)</td>" in html and "[, ]" not in html
    assert method_rows(board, "lime", "LIME")["pointing game"].tolist() == ["0.50 [0.4, 0.6]"]
    assert method_rows(None, "lime", "LIME") is None


# ------------------------------------------------------------------ the page in a real browser
@pytest.mark.skipif(not (browser.CHROMIUM.exists() and browser.CHROMEDRIVER.exists()),
                    reason="headless Chromium absent: apt-get install chromium chromium-driver")
def test_viewer_in_headless_chromium(viewer_run, tmp_path):
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
    run_dir, page, chosen = viewer_run
    target, k = chosen.iloc[-1], len(chosen) - 1  # the last test patient's explained patch (row k of maps.npz)
    driver = browser.chrome(Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
    try:
        browser.open_page(driver, page)
        browser.pick_patient(driver, target["patient_id"])  # its tissue is drawn: checked inside
        heat_visible = "return Bokeh.documents[0].get_model_by_name('layer-heat').visible"
        assert not driver.execute_script(heat_visible)
        assert browser.toggle_layer(driver, "P(IDC) heat map")
        browser.wait_for(driver, heat_visible)
        browser.click_patch(driver, target["image_id"])
        (panel,) = browser.wait_for(driver, browser.DEEP, ".attribution")
        assert panel.get_attribute("id") == f"attr-{k}" and panel.get_attribute("data-image-id") == target["image_id"]
        grays = browser.deep(driver, f"img[id^='attr-{k}-'][id$='-gray']")
        assert sorted(g.get_attribute("id") for g in grays) == sorted(f"attr-{k}-{m}-gray" for m in METHODS)
        browser.wait_for(driver, "return arguments[0].every(i => i.complete && i.naturalWidth > 0)", grays)
        shot = tmp_path / "viewer.png"
        driver.save_screenshot(str(shot))
        # the attribution landscape layer: drawn over the tissue at the slide's full resolution, opacity adjustable
        browser.toggle_layer(driver, "P(IDC) heat map")  # off again: the landscape alone over the tissue
        frame = browser.slide_frame(driver)
        shots = {"bare": browser.screenshot(driver, frame)}
        browser.pick_landscape(driver, "Grad-CAM", opacity=0.6)
        size = driver.execute_script("""const d = Bokeh.documents[0], r = d.get_model_by_name('layer-atlas');
            const v = Bokeh.index.find_one(d.get_model_by_name('slide')).renderer_views.get(r);
            return [v.glyph.image[0].naturalWidth, r.data_source.data.w[0]];""")
        shots["landscape"] = browser.screenshot(driver, frame)
        driver.save_screenshot(str(tmp_path / "landscape.png"))
        browser.pick_landscape(driver, "Grad-CAM", opacity=0.0)
        shots["transparent"] = browser.screenshot(driver, frame)
        errors = browser.console_errors(driver)
    finally:
        driver.quit()
    import matplotlib.pyplot as plt

    img = plt.imread(shot)[..., :3]
    assert img.shape[0] > 500 and img.std() > 0.05  # not a blank page
    assert not errors, errors
    assert size[0] == size[1] > 500  # one image pixel per slide pixel
    bare, landscape, transparent = (shots[k].astype(int) for k in ("bare", "landscape", "transparent"))
    assert (np.abs(landscape - bare).sum(axis=2) > 30).mean() > 0.05  # the layer is drawn over the slide
    assert np.abs(transparent - bare).max() <= 2  # ... and its opacity slider works
