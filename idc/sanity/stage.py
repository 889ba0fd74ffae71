"""Sanity stage (`make sanity`): Adebayo et al. 2018 randomization tests and Table 5.2, plus localization.

Reads the trained model (model/best.pt), the test predictions and the packed patch cache; writes
`sanity/metrics.csv`, `sanity/table_5_2.md`, `sanity/random_labels.json`, the localization outputs
(`idc.sanity.scoring`) and figures `figures/sanity_*.png`. Method and measure choices are
documented in docs/sanity.md.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from idc.sanity import plots as sanity_plots, scoring as sanity_localization
from idc.errors import ConfigError, DataError
from idc.paths import RunPaths, require
from idc.sanity.randomization import randomize_cascading, randomize_independent
from idc.sanity.similarity import METRICS, map_similarities
from idc.utils import file_sha256, write_csv_atomic, write_json_atomic, write_text_atomic, wrote

log = logging.getLogger("idc")

# Table 5.2 as the book quotes it from Adebayo et al. 2018: (model randomization, data randomization).
BOOK_TABLE_5_2: Dict[str, Tuple[str, str, str]] = {
    "vanilla_backprop": ("vanilla backprop", "pass", "pass"),
    "guided_backprop": ("guided backprop", "fail", "fail"),
    "integrated_gradients": ("integrated gradients", "fail", "fail"),
    "smoothgrad": ("SmoothGrad", "fail", "pass"),
    "gradcam": ("Grad-CAM", "pass", "pass"),
    "guided_gradcam": ("guided Grad-CAM", "fail", "fail"),
}
TABLE_METRIC = "spearman_abs"  # the measure `sanity.threshold` applies to
METRICS_COLUMNS = ["method", "title", "test", "depth", "block", "metric", "value", "std", "n"]

Maps = Dict[str, Tuple[np.ndarray, np.ndarray]]  # method -> (raw, gray)


# ---------------------------------------------------------------- inputs
def test_patches(run) -> pd.DataFrame:
    """Evaluated test patches (eval/predictions.csv) with `row` = their index in the packed cache."""
    from idc.data import cache_rows

    preds = run.predictions
    preds["row"] = cache_rows(run.patches, preds["image_id"], str(run.paths.predictions_csv))
    return preds


def select_balanced(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to `n` rows, half IDC-positive and half negative where possible, reproducibly by `seed`."""
    rng = np.random.default_rng(seed)
    pos = np.array(df.index[df["target"] == 1])
    neg = np.array(df.index[df["target"] == 0])
    n_pos = min(len(pos), max(n - len(neg), n // 2))
    n_neg = min(len(neg), n - n_pos)
    picked = np.concatenate([rng.permutation(pos)[:n_pos], rng.permutation(neg)[:n_neg]])
    return df.loc[np.sort(picked)]


def batch_tensors(images: np.ndarray, df: pd.DataFrame, device) -> Tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(uint8 NHWC images, normalized NCHW tensor, long target tensor) for the rows of `df`."""
    from idc.data.dataset import normalize_batch

    imgs = np.ascontiguousarray(images[df["row"].to_numpy()])
    x = normalize_batch(imgs, device=device)
    target = torch.tensor(np.array(df["target"], dtype=np.int64), device=device)
    return imgs, x, target


def compute_maps(model, x, target, images, methods: List[str], explain_cfg, seed: int) -> Maps:
    """Raw and grey maps of every method. The RNG is reseeded per call so that noisy methods
    (SmoothGrad) draw the same noise for every model being compared."""
    from idc.explain import attribute, to_grayscale

    out: Maps = {}
    for method in methods:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            raw = np.asarray(attribute(model, x, target, method, explain_cfg, images=images))
        out[method] = (raw, np.asarray(to_grayscale(raw)))
    return out


# ---------------------------------------------------------------- comparisons
def similarity_rows(ref: Maps, other: Maps, test: str, depth: int, block: str, titles, hog_ppc: int) -> List[dict]:
    rows = []
    for method, (raw, gray) in ref.items():
        sims = map_similarities(raw, other[method][0], gray, other[method][1], hog_pixels_per_cell=hog_ppc)
        for metric in METRICS:
            v = sims[metric]
            rows.append(dict(method=method, title=titles[method], test=test, depth=depth, block=block,
                             metric=metric, value=float(np.mean(v)), std=float(np.std(v)), n=len(v)))
    return rows


def random_labels_model(cfg, paths: RunPaths, device) -> Tuple[torch.nn.Module, dict]:
    """Train (or reuse) the same architecture on permuted training labels; return it and its record."""
    from idc import train
    from idc.model import load_model

    s = cfg.sanity
    model_dir = paths.sanity_dir / "random_labels_model"
    record_path = paths.sanity_dir / "random_labels.json"
    max_batches = s.random_labels_max_batches if s.random_labels_max_batches is not None else cfg.train.max_batches
    settings = dict(epochs=int(s.random_labels_epochs), max_batches=max_batches, seed=int(s.seed),
                    batch_size=int(cfg.train.batch_size), lr=float(cfg.train.lr),
                    patches_sha256=file_sha256(require(paths.patches_csv)))
    record = _read_json(record_path)
    ckpt = model_dir / "last.pt"
    if record is None or record.get("settings") != settings or not ckpt.exists():
        sub = copy.deepcopy(cfg)  # keeps the structured schema (typed keys) for train.fit
        sub.train.epochs = settings["epochs"]
        sub.train.max_batches = max_batches
        sub.train.resume = False
        log.info("training on permuted labels (seed %d, %d epochs) into %s", s.seed, settings["epochs"], model_dir)
        result = train.fit(sub, model_dir, permute_labels_seed=int(s.seed))
        record = dict(settings=settings, fit=_plain(result), train_accuracy=result["train_acc"])
        wrote(write_json_atomic(record_path, record), "random-label training record")
    else:
        log.info("reusing %s (same settings; delete it to retrain)", ckpt)
    model, _ = load_model(require(ckpt, "random-label model"), device=device)
    return model.eval(), record


def _plain(obj):
    """The JSON-serializable part of fit()'s result."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if isinstance(v, (int, float, str, bool, type(None), dict, list, tuple))}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _read_json(path: Path):
    if not path.exists():
        return None
    log.info("read %s", path)
    return json.loads(path.read_text())


# ---------------------------------------------------------------- Table 5.2
def verdict(similarity: float, threshold: float) -> str:
    """Adebayo's test is passed when the map changed, i.e. similarity fell below the threshold."""
    return "pass" if similarity < threshold else "fail"


def table_5_2(metrics: pd.DataFrame, threshold: float, full_depth: int, train_accuracy: float | None) -> str:
    """Markdown Table 5.2: the book's verdicts next to ours (Spearman of absolute maps).

    Model randomization is judged on the mean similarity over the whole cascade (depths 1..K: the
    normalized area under the cascading curve), not on the fully randomized network alone, where every
    method has changed: Adebayo et al.'s point is a map that survives randomizing the top layers."""
    m = metrics[metrics["metric"] == TABLE_METRIC]
    cascade = m[(m["test"] == "cascading") & (m["depth"] >= 1)]
    model_sim = cascade.groupby("method")["value"].mean()
    full_sim = cascade[cascade["depth"] == full_depth].set_index("method")["value"]
    data_sim = m[m["test"] == "data"].set_index("method")["value"]
    lines = [
        "# Table 5.2: sanity checks (Adebayo et al. 2018), the book's verdicts and ours",
        "",
        f"Similarity = Spearman rank correlation of absolute maps ({TABLE_METRIC}) between the trained model and "
        f"the randomized one, averaged over the selected test patches. A method **passes** when its map changed, "
        f"i.e. similarity < {threshold:g}. Model randomization uses the mean over the {full_depth} cascade steps "
        "(top block first), so a map that survives randomizing the top layers fails; the similarity with every "
        "block randomized is shown for reference.",
        "",
        "| method | book: model randomization | ours: mean similarity over the cascade | (all blocks randomized) "
        "| ours | agrees with book | book: data randomization | ours: similarity (random labels) | ours "
        "| agrees with book |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, (name, book_model, book_data) in BOOK_TABLE_5_2.items():
        cells = [name]
        for book, sims, extra in ((book_model, model_sim, full_sim), (book_data, data_sim, None)):
            if key in sims.index:
                ours = verdict(float(sims[key]), threshold)
                cells += [book, f"{sims[key]:.3f}"]
                if extra is not None:
                    cells.append(f"{extra[key]:.3f}" if key in extra.index else "-")
                cells += [ours, "yes" if ours == book else "no"]
            else:
                cells += [book, "not run"] + (["-"] if extra is not None else []) + ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    acc = "not reported by train.fit" if train_accuracy is None else f"{100 * train_accuracy:.1f}%"
    lines += ["", f"Model trained on permuted labels reached a training accuracy of {acc} on those labels.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- stage
def _validate(cfg, titles: Dict[str, str]) -> None:
    s = cfg.sanity
    unknown = [m for m in list(s.methods) + list(s.localization_methods or []) if m not in titles]
    if unknown:
        raise ConfigError(f"sanity.methods / sanity.localization_methods: unknown method(s) {unknown}; "
                          f"choose from {sorted(titles)}")
    if not s.cascade:
        raise ConfigError("sanity.cascade is empty; list the blocks to randomize, top first (e.g. [fc, layer4, ...])")
    if not 1 <= s.hog_pixels_per_cell <= cfg.data.patch_size // 2:
        raise ConfigError(f"sanity.hog_pixels_per_cell={s.hog_pixels_per_cell} must be in 1..{cfg.data.patch_size // 2}")
    if s.num_patches < 1:
        raise ConfigError(f"sanity.num_patches={s.num_patches} must be >= 1")


def run(cfg) -> dict:
    from idc.explain import METHODS
    from idc.inputs import load_run

    s = cfg.sanity
    titles = {k: m.title for k, m in METHODS.items()}
    _validate(cfg, titles)
    run = load_run(cfg, needs=("patches", "images", "model", "predictions"))
    paths, model, device, images = run.paths, run.model, run.device, run.images
    preds = test_patches(run)
    chosen = select_balanced(preds, int(s.num_patches), int(s.seed))
    if chosen.empty:
        raise DataError(f"{paths.predictions_csv} has no test patches; re-run `make evaluate` on a non-empty test split")
    imgs, x, target = batch_tensors(images, chosen, device)
    log.info("sanity: %d test patches (%d IDC-positive), methods %s", len(chosen), int(chosen["target"].sum()), list(s.methods))

    def maps_of(m):
        return compute_maps(m, x, target, imgs, list(s.methods), cfg.explain, int(s.seed))

    ppc = int(s.hog_pixels_per_cell)
    ref = maps_of(model)
    cascade = list(s.cascade)
    rows, example_columns = [], [("original", ref)]
    rows += similarity_rows(ref, ref, "cascading", 0, "original", titles, ppc)
    for depth in tqdm(range(1, len(cascade) + 1), desc="cascading randomization"):
        other = maps_of(_randomized(randomize_cascading, model, cascade, depth, int(s.seed)))
        rows += similarity_rows(ref, other, "cascading", depth, cascade[depth - 1], titles, ppc)
        example_columns.append((("+" if depth > 1 else "") + cascade[depth - 1], other))
    for i, block in enumerate(tqdm(cascade, desc="independent randomization")):
        other = maps_of(_randomized(randomize_independent, model, block, int(s.seed)))
        rows += similarity_rows(ref, other, "independent", i + 1, block, titles, ppc)
    rl_model, record = random_labels_model(cfg, paths, device)
    rl_maps = maps_of(rl_model)
    rows += similarity_rows(ref, rl_maps, "data", 0, "random_labels", titles, ppc)
    example_columns.append(("random labels", rl_maps))

    metrics = pd.DataFrame(rows, columns=METRICS_COLUMNS)
    wrote(write_csv_atomic(metrics, paths.sanity_metrics_csv), f"{len(metrics)} similarity rows")
    table = table_5_2(metrics, float(s.threshold), len(cascade), record.get("train_accuracy"))
    wrote(write_text_atomic(paths.table_5_2, table), "Table 5.2")
    figures = sanity_plots.write_sanity_figures(
        paths.figures_dir, metrics, cascade, titles, float(s.threshold), imgs[0], example_columns
    )
    loc = sanity_localization.run_localization(cfg, paths, model, preds, images, titles, device)
    return dict(metrics=metrics, table_5_2=table, random_labels=record, figures=figures, localization=loc)


def _randomized(fn, model, blocks_or_block, *args):
    """Call a randomization function, turning an unknown block name into a config error."""
    try:
        return fn(model, blocks_or_block, *args)
    except ValueError as err:
        raise ConfigError(f"sanity.cascade: {err}") from err
