"""Stage `make evaluate`: test-set predictions, Table 5.1 against the always-positive baseline,
PR curve and loss curves. Reads model/best.pt, data/patches.csv and the packed cache."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from idc.errors import ConfigError
from idc.inputs import load_run
from idc.metrics import always_positive_baseline, binary_scores, ranking_scores, table_5_1, table_5_1_markdown
from idc.model import predict
from idc.paths import RunPaths, require
from idc.utils import write_csv_atomic, write_json_atomic, write_text_atomic, wrote
from idc.viz import curves

log = logging.getLogger("idc")
PREDICTION_COLUMNS = ["image_id", "patient_id", "x", "y", "target", "proba", "pred"]


def predict_split(cfg, split: str) -> pd.DataFrame:
    run = load_run(cfg, needs=("patches", "images", "model"))
    sub = run.patches[run.patches["split"] == split]
    if sub.empty:
        raise ConfigError(f"evaluate.split={split!r} has no patches in {run.paths.patches_csv}; use train, val or test")
    proba = predict(run.model, run.images, rows=sub.index.to_numpy(), batch_size=cfg.evaluate.batch_size,
                    desc=f"predict {split}")[:, 1]
    out = sub.assign(proba=proba, pred=(proba >= 0.5).astype(int))[PREDICTION_COLUMNS]
    return out.reset_index(drop=True)


def compute_metrics(pred: pd.DataFrame) -> dict:
    y, p = pred["target"].to_numpy(), pred["pred"].to_numpy()
    base = always_positive_baseline(y)
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "patients": int(pred["patient_id"].nunique()),
        "cnn": {**binary_scores(y, p), **ranking_scores(y, pred["proba"].to_numpy()),
                # the book's PR curve ranks the 0/1 predictions, not P(IDC): its "AP 63%" is this number
                "average_precision_of_predictions": ranking_scores(y, p)["average_precision"],
                "confusion_matrix": confusion_matrix(y, p, labels=[0, 1]).tolist()},
        "baseline": {**binary_scores(y, base), **ranking_scores(y, np.ones(len(y))),
                     "confusion_matrix": confusion_matrix(y, base, labels=[0, 1]).tolist()},
        "table_5_1": table_5_1(y, p),
    }


def run(cfg) -> dict:
    paths = RunPaths.from_cfg(cfg)
    pred = predict_split(cfg, cfg.evaluate.split)
    wrote(write_csv_atomic(pred, paths.predictions_csv), f"{len(pred)} {cfg.evaluate.split} predictions")
    metrics = compute_metrics(pred)
    metrics["split"] = cfg.evaluate.split
    wrote(write_json_atomic(paths.metrics_json, metrics), "metrics")
    table = table_5_1_markdown(metrics["table_5_1"])
    wrote(write_text_atomic(paths.table_5_1, f"# Table 5.1 ({cfg.evaluate.split} set, {len(pred)} patches)\n\n{table}"))
    log.info("Table 5.1 (%s set):\n%s", cfg.evaluate.split, table)
    if pred["target"].nunique() == 2:
        curves.pr_curve(pred["target"], pred["proba"], paths.figures_dir / "chapter_05_pr_curve.png")
    else:
        log.warning("the %s split has only one class: no PR curve drawn", cfg.evaluate.split)
    history = pd.read_csv(require(paths.history_csv))
    curves.loss_curve_epoch(history, paths.figures_dir / "chapter_05_loss_curve_epoch.png")
    curves.loss_curve_step(pd.read_csv(require(paths.history_steps_csv)),
                           paths.figures_dir / "chapter_05_loss_curve_step.png")
    c = metrics["cnn"]
    log.info("CNN: accuracy %.3f, balanced accuracy %.3f, ROC-AUC %.3f, AP %.3f",
             c["accuracy"], c["balanced_accuracy"], c["roc_auc"], c["average_precision"])
    return metrics
