"""Data randomization (Adebayo et al. 2018): a model that has *memorized* permuted training labels.

The test compares maps of the trained model with maps of the same architecture trained on labels that
carry no information. It only means something if that second model really fitted the random labels;
a model that ends at the majority-class rate has learned nothing, and its maps say nothing. So:

- a fixed subset of `random_labels_patches` training patches (drawn with `sanity.seed`), labels
  permuted within the subset (class shares unchanged, so the majority rate is the subset's);
- no flips, no dropout (`model.dropout` forced to 0): nothing that fights memorization;
- Adam, as many epochs as it takes, up to the cap `random_labels_epochs`;
- after every epoch, accuracy on those permuted labels in eval mode on the unaugmented images
  (what the maps are computed with); training stops once it is >= `random_labels_target`.

The record says whether the threshold was reached; when it was not, the data-randomization verdict is
"invalid (reached X%)", never pass/fail. The model and record are cached under
`sanity/random_labels_model/` and reused while the settings and data are unchanged.

The **recipe control** (`recipe_control_model`): the same recipe (same subset, Adam, no dropout, no flips,
the same number of epochs as the random-label model took) on the subset's TRUE labels. The real model
differs from the random-label model in its recipe as well as its labels (Adamax, dropout, flips, every
training patch); maps that differ between two models trained alike except for the labels show that the
labels, not the recipe, changed them. Cached under `sanity/recipe_control_model/`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from idc.data.dataset import normalize_batch
from idc.errors import DataError, IntegrityError
from idc.integrity import read_json
from idc.model import as_dict, build_model, load_model, predict, save_checkpoint
from idc.utils import file_sha256, vouch_output, write_json_atomic, wrote

log = logging.getLogger("idc")


def memorization_subset(split: np.ndarray, targets: np.ndarray, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(cache rows of up to `n` training patches, their permuted labels), both fixed by `seed`."""
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(np.asarray(split) == "train")
    rows = np.sort(rng.choice(train, size=min(int(n), len(train)), replace=False))
    labels = rng.permutation(np.asarray(targets, dtype=np.int64)[rows])
    return rows, labels


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, device, rows=None) -> float:
    """Accuracy in eval mode on unaugmented uint8 images (`rows` of them, if given)."""
    if not len(labels):
        return float("nan")
    proba = predict(model, images, rows=rows, device=device, desc="memorization check")
    return float(np.mean(proba.argmax(1) == labels))


def fit_random_labels(model: nn.Module, images: np.ndarray, labels: np.ndarray, device, *, max_epochs: int,
                      target: float, lr: float, batch_size: int, seed: int) -> dict:
    """Train `model` in place on (images, labels) until eval-mode accuracy >= `target` or `max_epochs`."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    y_all = torch.as_tensor(labels, dtype=torch.int64)
    history, acc = [], 0.0
    bar = tqdm(range(1, max_epochs + 1), desc="memorize random labels", unit="epoch")
    for epoch in bar:
        model.train()
        total, seen = 0.0, 0
        for idx in torch.randperm(len(labels), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples in train mode
                continue
            idx = np.sort(idx.numpy())  # sorted reads from the memory-mapped cache
            x = normalize_batch(np.asarray(images[idx]), device=device)
            loss = loss_fn(model(x), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        acc = accuracy(model, images, labels, device)
        history.append(dict(epoch=epoch, loss=total / max(seen, 1), train_accuracy=acc))
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", acc=f"{acc:.3f}")
        if acc >= target:
            break
    return dict(epochs=len(history), train_accuracy=acc, history=history)


def _recipe_settings(cfg, paths, epochs=None) -> dict:
    s = cfg.sanity
    settings = dict(patches=int(s.random_labels_patches), max_epochs=int(s.random_labels_epochs),
                    target=float(s.random_labels_target), lr=float(s.random_labels_lr),
                    batch_size=int(s.random_labels_batch_size), seed=int(s.seed),
                    model={**as_dict(cfg.model), "dropout": 0.0, "weights": None},
                    patches_sha256=file_sha256(paths.patches_csv))
    if epochs is not None:  # the recipe control: true labels, exactly this many epochs
        settings.update(labels="true", max_epochs=int(epochs), target=None)
    return settings


def _cached(record_path: Path, ckpt_path: Path, settings: dict, device):
    try:
        record = read_json(record_path) if record_path.exists() else None
    except IntegrityError as err:  # a damaged record is no record: the model is trained again
        log.warning("%s: training the model again", str(err).split(";")[0])
        record = None
    if record is not None and record.get("settings") == settings and ckpt_path.exists():
        log.info("reusing %s (same settings and data; delete it to retrain)", ckpt_path)
        vouch_output(record_path), vouch_output(ckpt_path)  # kept, not rewritten: the stage's record may name them
        return load_model(ckpt_path, device=device)[0].eval(), record
    return None


def _train_recipe(settings: dict, patches, images, device, permute: bool, what: str) -> Tuple[nn.Module, dict]:
    """Train a model with the memorization recipe on the fixed subset (permuted or true labels); its record."""
    rows, permuted = memorization_subset(patches["split"], patches["target"], settings["patches"], settings["seed"])
    if len(rows) == 0:
        raise DataError("data/patches.csv has no training patches: the data-randomization test needs them")
    labels = permuted if permute else np.asarray(patches["target"], dtype=np.int64)[rows]
    torch.manual_seed(settings["seed"])
    model = build_model(settings["model"]).to(device)
    log.info("data randomization: %s on %d patches (cap %d epochs)", what, len(rows), settings["max_epochs"])
    start = time.perf_counter()
    target = settings["target"] if settings["target"] is not None else 2.0  # > 1: train every epoch
    fit = fit_random_labels(model, np.ascontiguousarray(images[rows]), labels, device, max_epochs=settings["max_epochs"],
                            target=target, lr=settings["lr"], batch_size=settings["batch_size"], seed=settings["seed"])
    model.eval()
    test = np.flatnonzero(np.asarray(patches["split"]) == "test")
    test_y = np.asarray(patches["target"], dtype=np.int64)[test]
    share, test_share = (float(np.mean(y)) if len(y) else 0.0 for y in (labels, test_y))
    record = dict(
        settings=settings, n=len(rows), epochs=fit["epochs"], train_accuracy=fit["train_accuracy"],
        memorized=bool(fit["train_accuracy"] >= target), majority_rate=max(share, 1 - share),
        test_accuracy=accuracy(model, images, test_y, device, rows=test) if len(test) else None,
        test_majority_rate=max(test_share, 1 - test_share) if len(test_y) else None,
        seconds=round(time.perf_counter() - start, 1), history=fit["history"],
    )
    log.info("data randomization: %s: %.1f%% of %d training labels after %d epochs (majority rate %.1f%%, test "
             "accuracy %s)", what, 100 * record["train_accuracy"], len(rows), record["epochs"],
             100 * record["majority_rate"], _percent(record["test_accuracy"]))
    return model, record


def _save(model, record: dict, ckpt_path: Path, record_path: Path, what: str) -> None:
    save_checkpoint(ckpt_path, {"model": model.state_dict(), "model_cfg": record["settings"]["model"],
                                "epoch": record["epochs"]})
    wrote(write_json_atomic(record_path, record), what)


def _recipe_model(settings: dict, json_path: Path, pt_path: Path, patches, images, device, permute: bool,
                  what: str) -> Tuple[nn.Module, dict]:
    """Reuse the model recorded at (json_path, pt_path) when its settings match, else train it with the
    memorization recipe (labels permuted or true) and save it with its record."""
    cached = _cached(json_path, pt_path, settings, device)
    if cached:
        return cached
    model, record = _train_recipe(settings, patches, images, device, permute, what)
    _save(model, record, pt_path, json_path, f"{what} training record")
    return model, record


def random_labels_model(cfg, paths, patches, images, device) -> Tuple[nn.Module, dict]:
    """Train (or reuse) the memorizing model; return it (eval mode) and its record (see module doc)."""
    return _recipe_model(_recipe_settings(cfg, paths), paths.random_labels_json, paths.random_labels_pt,
                         patches, images, device, True, "memorizing permuted labels")


def recipe_control_model(cfg, paths, patches, images, device, epochs: int) -> Tuple[nn.Module, dict]:
    """Train (or reuse) the recipe control: the memorization recipe for `epochs` epochs on the true labels."""
    return _recipe_model(_recipe_settings(cfg, paths, epochs=epochs), paths.recipe_control_json,
                         paths.recipe_control_pt, patches, images, device, False, "recipe control (true labels)")


def memorization_note(record: dict) -> str:
    """One sentence for Table 5.2 on whether the data-randomization column is valid."""
    acc, target = 100 * record["train_accuracy"], 100 * record["settings"]["target"]
    test, test_major = (_percent(record.get(k)) for k in ("test_accuracy", "test_majority_rate"))
    head = (f"valid: {acc:.1f}% >= {target:.0f}% memorized" if record["memorized"]
            else f"INVALID: reached {acc:.1f}% < {target:.0f}% within the cap of {record['settings']['max_epochs']} epochs")
    return (f"Data randomization {head} ({record['n']} training patches with permuted labels, {record['epochs']} "
            f"epochs, no flips, no dropout; accuracy in eval mode; majority rate {100 * record['majority_rate']:.1f}%; "
            f"test accuracy on true labels {test}, test majority rate {test_major}).")


def recipe_note(record: dict, similarity: str) -> str:
    """One sentence for Table 5.2 on the recipe control."""
    return (f"Recipe control: the same recipe on the same {record['n']} patches with their TRUE labels for the same "
            f"{record['epochs']} epochs (training accuracy {_percent(record['train_accuracy'])}, test accuracy "
            f"{_percent(record.get('test_accuracy'))}); {similarity}")


def _percent(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
