"""The rows of the leaderboard (map sources) and their maps.

A source is a method with keyword-argument overrides (a variant such as Grad-CAM at layer3: the spec
`gradcam:cam_layer=layer3` names the explain key, the method gets `layer="layer3"`), the same from the
fully randomized model (a control), or one of the model-free controls (`idc.scores.controls`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf

from idc.config import ExplainConfig
from idc.errors import ConfigError
from idc.explain.driver import compute_maps
from idc.explain.methods import METHODS
from idc.scores.controls import control_titles, model_free_controls
from idc.scores.localization import VARIANTS, relevance_variants

RANDOMIZED_SUFFIX = " [randomized model]"


@dataclass(frozen=True)
class MapSource:
    """One row of the leaderboard: a method (with explain overrides) or a control."""

    title: str
    kind: str  # method | randomized | control
    method: Optional[str] = None
    overrides: Tuple[Tuple[str, str], ...] = ()  # (explain key, value) as the variant spec writes them

    def arguments(self) -> Dict[str, object]:
        """The overrides as the method's keyword arguments (explain key -> argument name, typed by the schema)."""
        by_key = {key: arg for arg, key in METHODS[self.method].params.items()}
        return {by_key[key]: _typed(key, value) for key, value in self.overrides}


def _typed(key: str, value: str):
    """`value` converted to the type of explain.<key> by the config schema (a bad value is one clear error)."""
    node = OmegaConf.structured(ExplainConfig)
    try:
        node[key] = value
    except Exception as err:
        raise ConfigError(f"leaderboard.variants: explain.{key}={value!r} is not valid: {err}") from err
    return node[key]


def parse_variant(spec: str) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
    """'gradcam:cam_layer=layer3' -> ('gradcam', (('cam_layer', 'layer3'),)): explain keys the method reads."""
    method, _, rest = str(spec).partition(":")
    method = method.strip()
    if method not in METHODS:
        raise ConfigError(f"leaderboard.variants: unknown method {method!r} in {spec!r}; choose from {sorted(METHODS)}")
    keys = set(METHODS[method].params.values())
    pairs = []
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in keys:
            raise ConfigError(f"leaderboard.variants: {spec!r} must read method:key=value[,key=value] with keys of "
                              f"`explain` that {method} reads ({sorted(keys)}); {key.strip()!r} is not one")
        _typed(key.strip(), value.strip())  # a bad value fails here, before any work
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise ConfigError(f"leaderboard.variants: {spec!r} names no explain override (e.g. gradcam:cam_layer=layer3)")
    return method, tuple(pairs)


def map_sources(methods: Sequence[str], variants: Sequence[str], randomized_controls: bool,
                label_map: bool = False) -> List[MapSource]:
    """Methods, their variants, each one's randomized-model control, then the model-free controls (with a
    label map: darkness blurred to a nucleus too, `idc.scores.controls.control_titles`)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"leaderboard.methods: unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    rows = [MapSource(METHODS[m].title, "method", m) for m in methods]
    for spec in variants:
        method, overrides = parse_variant(spec)
        label = ", ".join(f"{k}={v}" for k, v in overrides)
        rows.append(MapSource(f"{METHODS[method].title} ({label})", "method", method, overrides))
    if randomized_controls:
        rows += [MapSource(r.title + RANDOMIZED_SUFFIX, "randomized", r.method, r.overrides) for r in list(rows)]
    return rows + [MapSource(t, "control") for t in control_titles(label_map)]


def source_maps(src: MapSource, model, random_model, imgs, target, explain_cfg, device, seed: int,
                reference=None) -> Dict[str, np.ndarray]:
    """{variant: non-negative [n, H, W] maps} of one source (methods through the one explain driver)."""
    if src.kind == "control":
        m = model_free_controls(imgs, seed, label_map=True)[src.title]
        return {v: m for v in VARIANTS}
    net = random_model if src.kind == "randomized" else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # noisy methods draw the same noise for every model
        raw, _ = compute_maps(net, imgs, target, [src.method], explain_cfg, device, reference=reference,
                              overrides=src.arguments())
    return relevance_variants(raw[src.method])


def mean_superpixel_size(images: np.ndarray, kernel_size: float, seed: int) -> float:
    """Mean LIME superpixel area in pixels: LIME's own quickshift segmentation at this kernel size."""
    from lime.wrappers.scikit_image import SegmentationAlgorithm  # optional heavy package: imported when used

    seg = SegmentationAlgorithm("quickshift", kernel_size=kernel_size, max_dist=200, ratio=0.2, random_seed=seed)
    return float(np.mean([img.shape[0] * img.shape[1] / len(np.unique(seg(np.asarray(img)))) for img in images]))


def lime_kernel_sizes(explain_kernel_size: float, sources: Sequence[MapSource]) -> List[float]:
    """The quickshift kernel sizes LIME rows use: explain.lime_kernel_size and those of LIME variants."""
    sizes = {float(explain_kernel_size)} if any(s.method == "lime" and not s.overrides for s in sources) else set()
    sizes |= {float(v) for s in sources if s.method == "lime" for k, v in s.overrides if k == "lime_kernel_size"}
    return sorted(sizes)
