"""Synthetic IDC data set in the exact Kaggle layout, with pixel ground truth.

`generate_synthetic(data_cfg)` renders one H&E-like slide per patient (idc.data.tissue), cuts it into
50x50 patches on the Kaggle grid (x, y = 1, 51, 101, ...), keeps the tissue patches, labels a patch
IDC-positive when the IDC region covers most (> 50%) of it, and writes
`<root>/<pid>/<0|1>/<pid>_idx5_x<X>_y<Y>_class<C>.png` plus `<masks_dir>/<pid>.npz` (slide pixel
coordinates: IDC nuclei, label map of IDC and decoy nuclei, nucleus ids, the nucleus-free rendering,
IDC region, tissue; `SIDECAR_KEYS`) and `patch_info.csv` beside the root (per patch: label, shortcut
cue, share of each nest type). Deterministic from `data.seed`; generated once: a
`manifest.json` beside the root records the parameters, and a different manifest regenerates.

The site-shift cohort (`data=synthetic_sites`, idc.data.sites) renders each patient with the staining
protocol of its site (round-robin in patient-id order); `patch_info.csv` then has a `site` column and the
manifest the resolved protocols and `test_site`. Without `data.sites` the set is the default one, byte for byte.

The planted-shortcut variant (`data=synthetic_shortcut`) paints a small ink dot into a share of the
patches: `cue_train_positive` / `cue_train_negative` of the classes in train and val patients,
`cue_test` of both classes in test patients (decorrelated); its pixels are `cue` in the mask file.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from idc.data.cells import footprints
from idc.data.dataset import resize_transform
from idc.data.sites import assign_sites, check_sites, protocols, stain_protocol
from idc.data.split import split_by_site, split_patient_ids
from idc.data.tissue import NEST_TYPES, render_slide
from idc.errors import DataError
from idc.integrity import read_npz
from idc.utils import clean_stale_temp, temp_dir, write_csv_atomic, write_json_atomic

log = logging.getLogger("idc")
GENERATOR_VERSION = 7  # v7: decoy nuclei, label map, nucleus ids, nucleus-free rendering (issue 22)
# The revision of v7's constants (the sidecar format is v7's): in the manifest, so a set that an earlier
# revision generated is regenerated, not reused (v7o: no hypocellular nests; v7v: 10% of the nest networks;
# v8b: lymphoid and hypocellular pockets of bounded size; revisions were named on from v7z as v8a, v8b;
# v10c: nests cover 55-70% of the non-fat tissue instead of 45-60%).
GENERATOR_REVISION = "v10c"
# What a sidecar <masks_dir>/<pid>.npz holds (docs/data.md): all [H, W] in slide pixels, cut at the scan edge.
SIDECAR_KEYS = ("mask", "labels", "nucleus_id", "nucleus_kind", "free_delta", "region", "annotation", "tissue",
                "nests", "generator_version")
INFO_COLUMNS = ["image_id", "patient_id", "x", "y", "target", "role", "cue", *(f"nest_{n}" for n in NEST_TYPES.values())]
PATCH = 50
MIN_TISSUE = 0.35  # a patch is written when at least this share of it is tissue (fat and lumen count)


def manifest_for(d) -> dict:
    check_sites(d)
    sites = protocols(d)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "generator_revision": GENERATOR_REVISION,
        "seed": int(d.seed),
        "num_patients": int(d.num_patients),
        "patches_per_patient": int(d.patches_per_patient),
        "idc_fraction_min": float(d.idc_fraction_min),
        "idc_fraction_max": float(d.idc_fraction_max),
        "edge_patch_prob": float(d.edge_patch_prob),
        "difficulty": float(d.difficulty),
        "cue_train_positive": float(d.cue_train_positive),
        "cue_train_negative": float(d.cue_train_negative),
        "cue_test": float(d.cue_test),
        # the cue rates depend on which patients are tested, so the split parameters are part of the set
        "split": [int(d.split_seed), float(d.test_size), float(d.val_share_of_holdout)],
    }
    if sites:  # only then: a default set's manifest stays as it was, and the set is not regenerated
        manifest.update(sites=sites, test_site=None if d.test_site is None else str(d.test_site))
    return manifest


def patient_plan(m: dict) -> list[dict]:
    """Per patient: id, size of its patch grid, IDC share, edge cut — all drawn from the seed."""
    rng = np.random.default_rng([m["seed"], 0])
    ids = np.sort(rng.choice(np.arange(8800, 17000), size=m["num_patients"], replace=False))
    plans = []
    for i, pid in enumerate(ids):
        n = m["patches_per_patient"] * float(np.clip(rng.lognormal(0.0, 0.55), 0.15, 3.4))
        cells = max(12.0, n / 0.62)  # the tissue blob covers about 60% of its bounding grid
        aspect = rng.uniform(0.75, 1.33)
        rows, cols = max(4, int(round(np.sqrt(cells / aspect)))), max(4, int(round(np.sqrt(cells * aspect))))
        lo, hi = m["idc_fraction_min"], m["idc_fraction_max"]
        frac = lo + (hi - lo) * rng.beta(1.3, 2.0)  # skewed low, as the real per-patient IDC shares
        cut = (i == 0 and m["edge_patch_prob"] > 0) or rng.random() < m["edge_patch_prob"]
        plans.append({"pid": int(pid), "index": i, "rows": rows, "cols": cols, "idc_fraction": float(frac),
                      "cut_w": int(rng.integers(6, 16)) if cut else 0, "cut_h": int(rng.integers(6, 16)) if cut else 0})
    for p, site in zip(plans, assign_sites(len(plans), [s["name"] for s in m.get("sites", [])])):
        p["site"] = site
    seed, test_size, val_share = m["split"]
    if m.get("test_site") is not None:
        roles = split_by_site({p["pid"]: p["site"] for p in plans}, m["test_site"], seed, test_size, val_share)
    else:
        roles = split_patient_ids([p["pid"] for p in plans], seed, test_size, val_share)
    for p in plans:  # the same patient split as prepare_data's, so the cue can differ in test patients
        p["role"] = next(name for name, ids in roles.items() if p["pid"] in ids)
    return plans


def patient_sites(d) -> dict:
    """{patient id: site name} of the set `d` generates (from its plan, nothing is rendered); {} without sites."""
    plans = patient_plan(manifest_for(d))
    return {p["pid"]: p["site"] for p in plans} if d.sites else {}


def patch_label(annotation, tissue) -> int:
    """1 when the annotated IDC region covers most (> 50%) of the patch's tissue. Of the tissue, not of
    the patch: otherwise patches at the slide border (white background) would be negative by
    construction, and "more white" would predict the label."""
    return int(annotation[tissue].mean() > 0.5)


def cue_rate(m: dict, role: str, label: int) -> float:
    """Share of patches that carry the shortcut cue: label-associated in train/val, not in test."""
    if role == "test":
        return m["cue_test"]
    return m["cue_train_positive"] if label else m["cue_train_negative"]


def paint_cue(rng, images, cue, y, x, h, w) -> None:
    """A small dark ink dot (radius 2-3 px, ragged) at a random place inside patch (x, y, w, h), in place,
    the same dot into each image of `images` (the slide and its nucleus-free rendering: ink is no nucleus)."""
    r = rng.uniform(2.0, 3.2)
    cy, cx = y + rng.uniform(r + 1, h - r - 1), x + rng.uniform(r + 1, w - r - 1)
    yy, xx = np.mgrid[y:y + h, x:x + w]
    dot = np.hypot(yy - cy, xx - cx) < r * (1 + 0.15 * rng.standard_normal((h, w)))
    ink = np.clip(np.array([38, 44, 70], np.float32) + 8 * rng.standard_normal((int(dot.sum()), 3)), 0, 255)
    for rgb in images:
        rgb[y:y + h, x:x + w][dot] = ink.astype(np.uint8)
    cue[y:y + h, x:x + w] |= dot


def render_patient(args) -> dict:
    """Render one patient's slide and write its patches and mask sidecar under the given folders."""
    plan, m, root, masks_dir = args
    rng = np.random.default_rng([m["seed"], 1, plan["index"]])
    site = next((s for s in m.get("sites", []) if s["name"] == plan["site"]), None)
    slide = render_slide(rng, plan["rows"], plan["cols"], plan["idc_fraction"], difficulty=m["difficulty"],
                         patch=PATCH, origin=1, protocol=stain_protocol(site) if site else None)
    cue_rng = np.random.default_rng([m["seed"], 2, plan["index"]])
    cue = np.zeros_like(slide.tissue)
    H, W = slide.tissue.shape[0] - plan["cut_h"], slide.tissue.shape[1] - plan["cut_w"]  # scan edge
    pid = plan["pid"]
    rows = []
    for c in (0, 1):
        (root / str(pid) / str(c)).mkdir(parents=True, exist_ok=True)
    for r in range(plan["rows"]):
        for k in range(plan["cols"]):
            y, x = 1 + r * PATCH, 1 + k * PATCH
            h, w = min(PATCH, H - y), min(PATCH, W - x)
            if h < 10 or w < 10 or slide.tissue[y:y + h, x:x + w].mean() < MIN_TISSUE:
                continue
            label = patch_label(slide.annotation[y:y + h, x:x + w], slide.tissue[y:y + h, x:x + w])
            has_cue = bool(cue_rng.random() < cue_rate(m, plan["role"], label))
            if has_cue:
                paint_cue(cue_rng, (slide.rgb, slide.rgb_free), cue, y, x, h, w)
            name = f"{pid}/{label}/{pid}_idx5_x{x}_y{y}_class{label}.png"
            Image.fromarray(slide.rgb[y:y + h, x:x + w]).save(root / name, compress_level=1)
            nests = slide.nests[y:y + h, x:x + w]
            rows.append([name, pid, x, y, label, plan["role"], int(has_cue),
                         *(round(float((nests == t).mean()), 4) for t in NEST_TYPES), *([site["name"]] if site else [])])
    extra = {"cue": cue[:H, :W]} if m["cue_train_positive"] or m["cue_train_negative"] or m["cue_test"] else {}
    write_sidecar(masks_dir / f"{pid}.npz", slide, H, W, **extra)
    return {"pid": pid, "rows": rows}


def write_sidecar(path: Path, slide, H: int, W: int, **extra) -> None:
    """The slide's ground truth, cut at the scan edge like its patches. The nucleus-free rendering is
    stored as `free_delta` = free - rgb (uint8: removing stain only brightens, so it is >= 0), which is
    zero away from the nuclei and compresses to a third of the image."""
    layer = slide.nuclei
    free_delta = slide.rgb_free[:H, :W] - slide.rgb[:H, :W]
    if (H, W) != layer.ids.shape:  # the blur of nuclei beyond the scan edge reaches in: not removable here
        free_delta[footprints(layer.ids[:H, :W]) == 0] = 0
    np.savez_compressed(path, mask=slide.nuclei_idc[:H, :W], labels=layer.labels[:H, :W],
                        nucleus_id=layer.ids[:H, :W], nucleus_kind=layer.kinds, free_delta=free_delta,
                        region=slide.region[:H, :W], annotation=slide.annotation[:H, :W],
                        tissue=slide.tissue[:H, :W], nests=slide.nests[:H, :W],
                        generator_version=np.int64(GENERATOR_VERSION), **extra)


def _params(stored: dict) -> dict:
    """The generator parameters of a stored manifest (it also records the resulting counts)."""
    return {k: v for k, v in stored.items() if k not in ("patches", "positive", "cue_patches")}


def _stored_params(manifest_path: Path):
    """The parameters in manifest.json; None when it is missing or damaged (the set is generated again)."""
    try:
        return _params(json.loads(manifest_path.read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def _is_generated(root: Path, manifest_path: Path) -> bool:
    return manifest_path.exists() or not root.exists() or not any(root.iterdir())


def generate_synthetic(d) -> Path:
    """Generate the set under `d.root` (and masks under `d.masks_dir`) unless the same one is there."""
    root = Path(str(d.root))
    masks_dir = Path(str(d.masks_dir)) if d.masks_dir else root.parent / "masks"
    if not d.num_patients or d.num_patients < 2:
        raise DataError(f"data.num_patients={d.num_patients} is too small for a synthetic set; use >= 3")
    manifest = manifest_for(d)
    manifest_path = root.parent / "manifest.json"
    for folder in dict.fromkeys((root.parent, masks_dir.parent)):
        if folder.is_dir():
            clean_stale_temp(folder, recursive=False)
    if _stored_params(manifest_path) == manifest and root.is_dir() and masks_dir.is_dir():
        log.info("synthetic set up to date: %s (manifest %s)", root, manifest_path)
        return root
    if not _is_generated(root, manifest_path):
        raise DataError(f"data.root={root} exists and holds files that idc did not generate (no {manifest_path}); "
                        "refusing to overwrite them. Point data.root elsewhere, or use data=kaggle to index them.")
    plans = patient_plan(manifest)
    workers = d.workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    # temp folders named like temp files: those of a killed generator are removed above, at the next start
    with temp_dir(root) as tmp_root, temp_dir(masks_dir) as tmp_masks:
        jobs = [(p, manifest, tmp_root, tmp_masks) for p in plans]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                stats = list(tqdm(pool.map(render_patient, jobs), total=len(jobs), desc="synthetic patients", unit="patient"))
        else:
            stats = [render_patient(j) for j in tqdm(jobs, desc="synthetic patients", unit="patient")]
        info = pd.DataFrame([row for s in stats for row in s["rows"]],
                            columns=INFO_COLUMNS + (["site"] if manifest.get("sites") else []))
        manifest_path.unlink(missing_ok=True)  # from here on the old set is invalid until the swap is complete
        for final, tmp in ((root, tmp_root), (masks_dir, tmp_masks)):
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
    write_csv_atomic(info, root.parent / "patch_info.csv")
    pos = int(info["target"].sum())
    neg = len(info) - pos
    write_json_atomic(manifest_path, {**manifest, "patches": neg + pos, "positive": pos,
                                      "cue_patches": int(info["cue"].sum())})
    log.info("generated %d synthetic patients, %d patches (%.1f%% IDC-positive) in %.1f s under %s; masks in %s",
             len(stats), neg + pos, 100 * pos / max(neg + pos, 1), time.perf_counter() - t0, root, masks_dir)
    return root


def load_masks(masks_dir, pid: int, keys=None) -> dict:
    """{key: array} of `<masks_dir>/<pid>.npz` in slide pixel coordinates; `keys` limits what is
    decompressed. A synthetic sidecar holds `SIDECAR_KEYS` (+ `cue` on the shortcut set); one written by
    an older generator (v6 and before: no label map) is refused with one line that says to regenerate.
    A sidecar made by hand for real data (a `mask`, maybe a `cue`) loads for what it holds; asking it
    for a missing key is an error naming the key."""
    path = Path(masks_dir) / f"{int(pid)}.npz"
    if not path.exists():
        raise DataError(f"no ground-truth mask {path}; masks exist only for the synthetic set (data.masks_dir)")
    z = read_npz(path, keys=None if keys is None else (*keys, "generator_version", "nests"),
                 fix=f"the synthetic set is incomplete: delete {masks_dir} (idc generated it) and run "
                     "`make data ARGS=run.force=true` (same overrides) to generate it again")
    version = int(z["generator_version"]) if "generator_version" in z else None
    if (version or "nests" in z) and version != GENERATOR_VERSION:
        raise DataError(f"{path} was written by synthetic generator v{version or '6 or older'}, this is "
                        f"v{GENERATOR_VERSION} (label map, nucleus ids, nucleus-free rendering): regenerate the "
                        "set with `make data` (delete its manifest.json if the data root was copied)")
    missing = [k for k in (keys or ()) if k not in z]
    if missing:
        raise DataError(f"{path} lacks {missing}; label maps, nucleus ids and counterfactuals exist for the "
                        "synthetic set (`make data`)")
    return {k: z[k] for k in (keys or z)}


def stretch_mask(crop: np.ndarray, size: int = PATCH) -> np.ndarray:
    """bool [size, size]: a bool crop stretched like an edge patch's image (the loader's PIL resize,
    bilinear on 0/1, then > 0.5), so mask pixels stay over the image pixels they mark."""
    crop = np.asarray(crop, bool)
    if crop.shape == (size, size):
        return crop.copy()
    if crop.size == 0:
        return np.zeros((size, size), bool)
    stretched = resize_transform(size)(Image.fromarray(crop.astype(np.float32), mode="F"))
    return np.asarray(stretched) > 0.5


def patch_mask(mask: np.ndarray, x: int, y: int, size: int = PATCH) -> np.ndarray:
    """bool [size, size]: the slide mask under patch (x, y), aligned with the patch *as the model sees
    it*. The mask files are cut at the scan edge like the images, so an edge patch's crop is h x w < 50,
    and the loader stretches that image to size x size (the book's Resize); the crop is stretched by the
    same resize (`stretch_mask`)."""
    return stretch_mask(mask[y:y + size, x:x + size], size)


def patch_labels(labels: np.ndarray, x: int, y: int, size: int = PATCH) -> np.ndarray:
    """uint8 [size, size] label map under patch (x, y) as the model sees it (0 background, 1 IDC
    nucleus, 2 decoy nucleus); on edge patches each class is stretched like `patch_mask`, so
    `patch_labels(...) == 1` is exactly `patch_mask(mask, ...)`."""
    crop = np.asarray(labels[y:y + size, x:x + size])
    out = np.zeros((size, size), np.uint8)
    for value in (1, 2):  # bilinear weights of disjoint classes sum to <= 1: at most one exceeds 0.5
        out[stretch_mask(crop == value, size)] = value
    return out


def patch_nucleus_ids(ids: np.ndarray, labels: np.ndarray, x: int, y: int, size: int = PATCH) -> np.ndarray:
    """int32 [size, size] nucleus id under patch (x, y) as the model sees it (0 = no nucleus). On edge
    patches the ids are stretched nearest-neighbour and kept where `patch_labels` marks a nucleus."""
    crop = np.asarray(ids[y:y + size, x:x + size], np.int32)
    if crop.shape == (size, size):
        return crop.copy()
    if crop.size == 0:
        return np.zeros((size, size), np.int32)
    stretched = np.asarray(Image.fromarray(crop, mode="I").resize((size, size), Image.NEAREST), np.int32)
    return np.where(patch_labels(labels, x, y, size) > 0, stretched, 0)
