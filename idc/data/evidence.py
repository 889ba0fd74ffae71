"""Does the model rely on the synthetic set's marked evidence, and can darkness or edges fake it?

Counterfactual P(IDC) (idc.data.counterfactual) for IDC-positive test patches: as they are, with every
IDC nucleus removed, with every decoy removed, with each decoy kind alone removed (the sum can hide pulls
of opposite sign), with the benign nests' own nuclei removed, and with an equal area of non-nuclear
tissue replaced; per-nucleus drops of the IDC logit; the model-free controls
(darkness, edges, a random map, darkness blurred to the scale of a nucleus) on the label map; and how
frequent the decoys are in each class. The measurements behind the generator's gates (docs/data.md):

    python -m idc.data.evidence outputs/synthetic data/synthetic [--nuclei 32]

reads `RUN_DIR/eval/predictions.csv` and `RUN_DIR/model/best.pt`, the PNGs under
`DATA_DIR/IDC_regular_ps50_idx5` and the sidecars under `DATA_DIR/masks`, and prints JSON: each score
as a patient-clustered mean with its 95% CI, n patches and n patients.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from idc.data.cells import BENIGN_KINDS, DECOY_KINDS, IDC, KINDS
from idc.data.counterfactual import PatchTruth, load_truths, model_view, remove_nuclei, replace_tissue
from idc.data.synthetic import PATCH, load_masks, patch_labels, patch_nucleus_ids
from idc.integrity import read_csv
from idc.model import load_model, predict
from idc.paths import RunPaths
from idc.scores.bootstrap import cluster_bootstrap
from idc.scores.controls import model_free_controls
from idc.scores.inference import Estimate, t_interval
from idc.scores.localization import relevance_rank_accuracy
from idc.scores.nuclei import (evidence_verification, idc_area_share, nuclear_auroc, nuclear_mass,
                               nucleus_rank_correlation, nucleus_relevance)

log = logging.getLogger("idc")
# The nucleus removals of the evidence check (name -> the cells.KINDS taken out): IDC nuclei; decoys (the
# kinds drawn alike in both classes); the benign epithelial nests' own nuclei (evidence *against* IDC where a
# positive patch holds some). With "as is" and an equal area of non-nuclear tissue replaced, the
# counterfactuals of `counterfactual_probabilities`; KIND_REMOVALS takes out each decoy kind alone (the
# decoys' sum can hide pulls of opposite sign).
REMOVALS = {"no_idc": (IDC,), "no_decoy": DECOY_KINDS, "no_benign": BENIGN_KINDS}
KIND_REMOVALS = {f"no_{KINDS[k]}": (k,) for k in DECOY_KINDS}
COUNTERFACTUALS = ("as_is", *REMOVALS, "tissue")


def removal_probabilities(model, truths: list[PatchTruth], removals: dict, p_as_is, batch_size: int = 256,
                          device=None) -> pd.DataFrame:
    """One column `p_<name>` per removal: P(IDC) of each patch with every nucleus of the removal's kinds
    taken out. A patch that holds none of them keeps its pixels, so it keeps `p_as_is` and is not put
    through the model again."""
    out = {}
    for name, kinds in removals.items():
        remove = [t.nuclei(kinds) for t in truths]
        changed = np.array([len(r) > 0 for r in remove], bool)
        p = np.array(p_as_is, np.float64)
        if changed.any():
            images = np.stack([model_view(remove_nuclei(t, r)) for t, r, c in zip(truths, remove, changed) if c])
            p[changed] = predict(model, images, batch_size=batch_size, device=device, desc=f"P(IDC) {name}")[:, 1]
        out[f"p_{name}"] = p
    return pd.DataFrame(out)


def counterfactual_probabilities(model, truths: list[PatchTruth], seed: int = 0, batch_size: int = 256,
                                 device=None) -> pd.DataFrame:
    """One row per patch: P(IDC) of each of `COUNTERFACTUALS` (`p_as_is`, ...), the IDC
    footprint area and the tissue area actually replaced (pixels of the PNG)."""
    rng = np.random.default_rng(seed)
    tissue, replaced = [], []
    for t in truths:
        image, area = replace_tissue(t, t.nuclei((IDC,)), rng)
        tissue.append(model_view(image))
        replaced.append(area)
    p = lambda images, key: predict(model, images, batch_size=batch_size, device=device, desc=f"P(IDC) {key}")[:, 1]
    p_as_is = p(np.stack([model_view(t.image) for t in truths]), "as_is")
    removed = removal_probabilities(model, truths, REMOVALS, p_as_is, batch_size, device)
    idc_area = [int(np.isin(t.footprint, t.nuclei((IDC,))).sum()) for t in truths]
    return pd.DataFrame({"p_as_is": p_as_is, **removed, "p_tissue": p(np.stack(tissue), "tissue"),
                         "idc_footprint": idc_area, "tissue_replaced": np.array(replaced)})


def log_odds(p: np.ndarray) -> np.ndarray:
    """The IDC logit of a two-class softmax, log P(IDC) / P(benign) (= z_IDC - z_benign)."""
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def nucleus_drops(model, truth: PatchTruth, batch_size: int = 256, device=None) -> pd.DataFrame:
    """One row per nucleus with a pixel in the patch: its id, kind and the drop of the IDC logit when it
    alone is removed (positive: the model needed it for IDC)."""
    nuclei = np.unique(truth.ids[truth.ids > 0])
    images = np.stack([model_view(truth.image)] + [model_view(remove_nuclei(truth, [i])) for i in nuclei])
    z = log_odds(predict(model, images, batch_size=batch_size, device=device, desc=None)[:, 1])
    return pd.DataFrame({"nucleus": nuclei, "kind": [truth.kinds[int(i)] for i in nuclei], "drop": z[0] - z[1:]})


def model_view_truth(patches: pd.DataFrame, masks_dir) -> tuple[np.ndarray, np.ndarray]:
    """(label maps, nucleus ids) [n, 50, 50] of the patches as the model sees them."""
    labels, ids, sidecars = [], [], {}
    for row in patches.itertuples(index=False):
        pid = int(row.patient_id)
        if pid not in sidecars:
            sidecars[pid] = load_masks(masks_dir, pid, keys=("labels", "nucleus_id"))
        s = sidecars[pid]
        labels.append(patch_labels(s["labels"], int(row.x), int(row.y)))
        ids.append(patch_nucleus_ids(s["nucleus_id"], s["labels"], int(row.x), int(row.y)))
    return np.stack(labels), np.stack(ids)


def decoy_statistics(patches: pd.DataFrame, masks_dir) -> pd.DataFrame:
    """One row per patch (PNG pixels): tissue pixels, nuclear pixels by group (IDC, decoy kinds, the
    benign nests' own), decoy nuclei (ids of a decoy kind with a pixel in the patch) and the decoys'
    share of the nuclear area. The decoys must be as frequent in both classes and make 30-50% of a
    positive patch's nuclear area (docs/data.md)."""
    rows, sidecars = [], {}
    for row in patches.itertuples(index=False):
        pid = int(row.patient_id)
        if pid not in sidecars:
            sidecars[pid] = load_masks(masks_dir, pid, keys=("nucleus_id", "nucleus_kind", "tissue"))
        s, x, y = sidecars[pid], int(row.x), int(row.y)
        ids = s["nucleus_id"][y:y + PATCH, x:x + PATCH]
        kind = s["nucleus_kind"][ids]
        decoy = np.isin(kind, DECOY_KINDS)
        px = {"idc_px": int((kind == IDC).sum()), "decoy_px": int(decoy.sum()),
              "benign_px": int(np.isin(kind, BENIGN_KINDS).sum())}
        nuclear = sum(px.values())
        rows.append({"tissue_px": int(s["tissue"][y:y + PATCH, x:x + PATCH].sum()), **px,
                     "decoy_nuclei": len(np.unique(ids[decoy])),
                     "decoy_share": px["decoy_px"] / nuclear if nuclear else np.nan})
    return pd.DataFrame(rows, index=patches.index)


def decoy_rows(patches: pd.DataFrame, stats: pd.DataFrame) -> list[dict]:
    """Decoy share of the nuclear area of positive patches and decoy density (area and nuclei per
    1,000 tissue pixels) per class, patient-clustered means with CIs."""
    rows = []
    for target, name in ((1, "IDC-positive"), (0, "negative")):
        sel = (patches["target"] == target).to_numpy() & (stats["tissue_px"] > 0).to_numpy()
        st, pid = stats[sel], patches["patient_id"].to_numpy()[sel]
        if target == 1:
            rows.append(estimate_row(f"{name}: decoy share of the nuclear area", st["decoy_share"].to_numpy(), pid))
        rows.append(estimate_row(f"{name}: decoy pixels per 1,000 tissue pixels", 1e3 * st["decoy_px"] / st["tissue_px"], pid))
        rows.append(estimate_row(f"{name}: decoy nuclei per 1,000 tissue pixels", 1e3 * st["decoy_nuclei"] / st["tissue_px"], pid))
    return rows


def as_row(name: str, e) -> dict:
    """An Estimate (mean, 95% patient-clustered CI, n patches, n patients) as a printable row."""
    return {"row": name, "mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n, "patients": e.n_clusters}


def estimate_row(name: str, values, patients) -> dict:
    return as_row(name, cluster_bootstrap(values, patients))


def label_map_controls(images: np.ndarray, seed: int = 0) -> dict:
    """The model-free controls, plus darkness blurred to the scale of a nucleus (a dark-blob finder)."""
    return model_free_controls(images, seed, label_map=True)


def control_scores(images: np.ndarray, labels: np.ndarray, patients, seed: int = 0) -> list[dict]:
    """Nuclear AUROC, nuclear mass (with its chance level) and relevance rank accuracy of the model-free
    controls, patient-clustered means with CIs."""
    rows = [estimate_row("chance: IDC share of nuclear pixels (nuclear mass)", idc_area_share(labels), patients)]
    for title, maps in label_map_controls(images, seed).items():
        for score, values in (("nuclear AUROC", nuclear_auroc(maps, labels)), ("nuclear mass", nuclear_mass(maps, labels)),
                              ("relevance rank", relevance_rank_accuracy(maps, labels == 1))):
            rows.append(estimate_row(f"{title}: {score}", values, patients))
    return rows


def nucleus_control_scores(model, truths, images, ids, patients, seed: int = 0) -> tuple[list[dict], pd.DataFrame]:
    """Per-nucleus logit drops of each patch and the controls' rank correlation with them."""
    controls = label_map_controls(images, seed)
    drops, corr = [], {t: [] for t in controls}
    for i, truth in enumerate(tqdm(truths, desc="per-nucleus drops", unit="patch")):
        d = nucleus_drops(model, truth)
        drops.append(d.assign(patch=i, patient_id=patients[i]))
        for title, maps in controls.items():
            corr[title].append(nucleus_rank_correlation(nucleus_relevance(maps[i], ids[i], d["nucleus"]), d["drop"]))
    rows = [estimate_row(f"{t}: nucleus rank correlation", v, patients) for t, v in corr.items()]
    return rows, pd.concat(drops, ignore_index=True)


def run(run_dir: Path, data_dir: Path, nuclei: int = 0, seed: int = 0) -> dict:
    root, masks_dir = data_dir / "IDC_regular_ps50_idx5", data_dir / "masks"
    paths = RunPaths(Path(run_dir))
    preds = read_csv(paths.predictions_csv, columns=("image_id", "patient_id", "x", "y", "target", "proba"))
    decoys = decoy_rows(preds, decoy_statistics(preds, masks_dir))
    pos = preds[preds["target"] == 1].reset_index(drop=True)
    labels, ids = model_view_truth(pos, masks_dir)
    keep = ((labels == 1).any(axis=(1, 2)) & (labels == 2).any(axis=(1, 2))).nonzero()[0]
    pos, labels, ids = pos.iloc[keep].reset_index(drop=True), labels[keep], ids[keep]
    log.info("%d IDC-positive test patches with IDC and decoy nuclei", len(pos))
    model, _ = load_model(paths.best_pt)
    truths = load_truths(pos, root, masks_dir)
    patients = pos["patient_id"].to_numpy()
    images = np.stack([model_view(t.image) for t in truths])
    t0 = time.perf_counter()
    cf = counterfactual_probabilities(model, truths, seed)
    timing = {"counterfactuals_s": time.perf_counter() - t0}
    if not np.allclose(cf["p_as_is"].to_numpy(), pos["proba"].to_numpy(), atol=1e-4):
        log.warning("P(IDC) of the unchanged patches differs from predictions.csv: not the same model or pixels")
    v = evidence_verification(cf["p_as_is"], cf["p_no_idc"], cf["p_no_decoy"], patients, p_tissue=cf["p_tissue"])
    rows = [as_row(k, e) for k, e in v._asdict().items() if isinstance(e, Estimate)]
    rows.append(as_row("drop_benign", t_interval((cf["p_as_is"] - cf["p_no_benign"]).to_numpy(), patients)))
    t0 = time.perf_counter()
    by_kind = removal_probabilities(model, truths, KIND_REMOVALS, cf["p_as_is"])
    timing["decoy_kinds_s"] = time.perf_counter() - t0
    kind_rows = [as_row(f"drop: {KINDS[k]} removed", t_interval((cf["p_as_is"] - by_kind[f"p_{name}"]).to_numpy(), patients))
                 for k, name in zip(DECOY_KINDS, KIND_REMOVALS)]
    out = {"patches": len(pos), "patients": int(len(set(patients))), "counterfactuals": rows,
           "mean_p": {k: float(cf[k].mean()) for k in cf.filter(like="p_")}, "verdict": v.reason(), "controls": control_scores(images, labels, patients, seed), "decoys": decoys,
           "decoy_kinds": kind_rows, "tissue_replaced_share": float(cf["tissue_replaced"].sum() / max(cf["idc_footprint"].sum(), 1))}
    if nuclei:
        sub = np.random.default_rng(seed).permutation(len(pos))[:nuclei]
        t0 = time.perf_counter()
        rows, drops = nucleus_control_scores(model, [truths[i] for i in sub], images[sub], ids[sub], patients[sub], seed)
        timing["nucleus_drops_s"] = time.perf_counter() - t0
        out["nucleus_controls"] = rows
        out["nucleus_drops_by_kind"] = drops.groupby("kind")["drop"].describe().round(4).to_dict(orient="index")
        out["nuclei_per_patch"] = float(drops.groupby("patch").size().mean())
    out["timing"] = timing
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("data_dir", type=Path, help="the synthetic set's folder (holds IDC_regular_ps50_idx5 and masks)")
    parser.add_argument("--nuclei", type=int, default=0, help="patches scored by per-nucleus drops (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(run(args.run_dir, args.data_dir, args.nuclei, args.seed), indent=1, default=float))


if __name__ == "__main__":
    main()
