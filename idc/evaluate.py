"""Stage `make evaluate`: test-set predictions, Table 5.1 against the always-positive baseline,
PR curve and loss curves. Reads model/best.pt, data/patches.csv and the packed cache."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from idc import colour_baseline
from idc.errors import ConfigError
from idc.inputs import PREDICTION_COLUMNS, load_run
from idc.integrity import check_finite, read_csv
from idc.markdown import markdown_table
from idc.metrics import always_positive_baseline, binary_scores, ranking_scores, table_5_1, table_5_1_markdown
from idc.model import predict
from idc.paths import RunPaths
from idc.tracking import tracker
from idc.utils import write_csv_atomic, write_json_atomic, write_text_atomic, wrote
from idc.viz import curves

log = logging.getLogger("idc")


def predict_split(cfg, split: str) -> pd.DataFrame:
    run = load_run(cfg, needs=("patches", "images", "model"))
    sub = run.patches[run.patches["split"] == split]
    if sub.empty:
        raise ConfigError(f"evaluate.split={split!r} has no patches in {run.paths.patches_csv}; use train, val or test")
    proba = predict(run.model, run.images, rows=sub.index.to_numpy(), batch_size=cfg.evaluate.batch_size,
                    desc=f"predict {split}")[:, 1]
    check_finite(proba, f"the P(IDC) of {run.paths.best_pt} on the {split} split", "Retrain with `make train`.")
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


def colour_baseline_metrics(cfg, split: str) -> dict:
    """The colour-statistics control (idc.colour_baseline): fit on the train split, scored on `split`.
    Features come from the packed cache, i.e. the same resized pixels the CNN sees, on every data set."""
    run = load_run(cfg, needs=("patches", "images"))
    df, images = run.patches, run.images
    x, y = colour_baseline.colour_features(images), df["target"].to_numpy()
    train, test = (df["split"] == "train").to_numpy(), (df["split"] == split).to_numpy()
    _, scores = colour_baseline.fit_score(x[train], y[train], x[test], y[test])
    return {**scores, "features": list(colour_baseline.FEATURES), "fit_on": "train", "n_train": int(train.sum())}


def ranking_table(metrics: dict) -> str:
    """ROC-AUC and AP (ranking by P(IDC)) of the CNN and of the colour control."""
    rows = [[name, f"{metrics[key]['roc_auc']:.3f}", f"{metrics[key]['average_precision']:.3f}"]
            for name, key in (("CNN (ResNet-18)", "cnn"), (colour_baseline.NAME, "colour_baseline"))]
    return markdown_table(["", "ROC-AUC", "AP"], rows) + "\n"


def run(cfg) -> dict:
    paths = RunPaths.from_cfg(cfg)
    pred = predict_split(cfg, cfg.evaluate.split)
    wrote(write_csv_atomic(pred, paths.predictions_csv), f"{len(pred)} {cfg.evaluate.split} predictions")
    metrics = compute_metrics(pred)
    metrics["split"] = cfg.evaluate.split
    metrics["colour_baseline"] = colour_baseline_metrics(cfg, cfg.evaluate.split)
    metrics["table_5_1"].append({"model": colour_baseline.NAME, **{
        k: 100 * metrics["colour_baseline"][k] for k in ("precision", "recall", "f1")}})
    wrote(write_json_atomic(paths.metrics_json, metrics), "metrics")
    table = table_5_1_markdown(metrics["table_5_1"]) + "\n" + ranking_table(metrics)
    wrote(write_text_atomic(paths.table_5_1, f"# Table 5.1 ({cfg.evaluate.split} set, {len(pred)} patches)\n\n{table}"))
    log.info("Table 5.1 (%s set):\n%s", cfg.evaluate.split, table)
    if pred["target"].nunique() == 2:
        curves.pr_curve(pred["target"], pred["proba"], paths.figure("chapter_05_pr_curve"))
        track = tracker(cfg, "evaluate")  # train.logger=tensorboard: the PR curve and the scores
        track.pr_curve(f"{cfg.evaluate.split}/pr_curve", pred["target"], pred["proba"])
        track.scalars(cfg.evaluate.split, metrics["cnn"])
        track.scalars(f"{cfg.evaluate.split}/always_positive", metrics["baseline"])
        track.close()
    else:
        log.warning("the %s split has only one class: no PR curve drawn", cfg.evaluate.split)
    history = read_csv(paths.history_csv)
    curves.loss_curve_epoch(history, paths.figure("chapter_05_loss_curve_epoch"))
    curves.loss_curve_step(read_csv(paths.history_steps_csv), paths.figure("chapter_05_loss_curve_step"))
    c = metrics["cnn"]
    log.info("CNN: accuracy %.3f, balanced accuracy %.3f, ROC-AUC %.3f, AP %.3f",
             c["accuracy"], c["balanced_accuracy"], c["roc_auc"], c["average_precision"])
    return metrics
