"""Site-shift cohort (`data.sites`, `data.test_site`; docs/data.md, "Site shift"): the known-answer test for
stain normalization and stain augmentation.

Each site is a staining protocol (`idc.data.tissue.StainProtocol`: H and E optical-density vectors, stain
intensities, glass colour, blur). The generator assigns the patients to the sites round-robin in patient-id
order (`assign_sites`), so every site gets every kind of patient, and renders each slide with its site's
protocol; only the stain depends on the site. With `data.test_site` the test split is exactly that site's
patients, never seen in training (`idc.data.split.split_by_site`).

`check_sites(d)` refuses a bad configuration with one line naming the key and the fix; `protocols(d)` is the
resolved list that the generator's manifest records (empty without sites: the default set, unchanged).
"""
from __future__ import annotations

from omegaconf import OmegaConf

from idc.data.tissue import StainProtocol
from idc.errors import ConfigError


def _site_list(d) -> list[dict]:
    sites = OmegaConf.select(d, "sites", default=None) if OmegaConf.is_config(d) else getattr(d, "sites", None)
    if not sites:
        return []
    return OmegaConf.to_container(sites, resolve=True) if OmegaConf.is_config(sites) else list(sites)


def check_sites(d) -> None:
    """One ConfigError for the first problem with `data.sites` / `data.test_site`, else nothing."""
    sites, test_site = _site_list(d), OmegaConf.select(d, "test_site", default=None)
    names = [str(s.get("name")) for s in sites]
    if test_site is not None and not sites:
        raise ConfigError(f"data.test_site={test_site} needs data.sites (the staining protocols); use "
                          "data=synthetic_sites, or data.test_site=null")
    if not sites:
        return
    if str(d.source) != "synthetic":
        raise ConfigError(f"data.sites is an option of the synthetic generator (data.source=synthetic), not of "
                          f"data.source={d.source}; set data.sites=[] and data.test_site=null")
    for i, s in enumerate(sites):
        if not s.get("name") or names.count(str(s["name"])) > 1:
            raise ConfigError(f"data.sites[{i}].name={s.get('name')!r}: every site needs its own name")
        for key in ("hematoxylin", "eosin", "background"):
            value = s.get(key)
            if value is not None and (len(value) != 3 or min(value) <= 0):
                raise ConfigError(f"data.sites[{i}].{key}={value}: give 3 positive values (R, G, B)")
        if max(s.get("background") or [0]) > 255:
            raise ConfigError(f"data.sites[{i}].background={s['background']}: grey levels, at most 255")
        for key in ("h_intensity", "e_intensity", "blur"):
            if s.get(key) is not None and not s[key] > 0:
                raise ConfigError(f"data.sites[{i}].{key}={s[key]}: use a value > 0")
    if test_site is not None and len(sites) < 2:
        raise ConfigError(f"data.test_site={test_site} holds out the only site of data.sites: nothing is left to "
                          "train on; add a site, or set data.test_site=null")
    if test_site is not None and str(test_site) not in names:
        raise ConfigError(f"data.test_site={test_site} is not a site of data.sites ({', '.join(names)}); use one of "
                          "them, or data.test_site=null for the patient split over every site")
    if test_site is not None and d.num_patients is not None and int(d.num_patients) < len(sites) + 2:
        raise ConfigError(f"data.num_patients={d.num_patients} is too few for {len(sites)} sites and a held-out test "
                          f"site (patients for train, val and test): use at least {len(sites) + 2}")


def protocols(d) -> list[dict]:
    """The sites as the manifest records them: every protocol value resolved (null = the generator's default)."""
    default = StainProtocol()
    out = []
    for s in _site_list(d):
        out.append({"name": str(s["name"]),
                    "hematoxylin": [float(v) for v in (s.get("hematoxylin") or default.hematoxylin)],
                    "eosin": [float(v) for v in (s.get("eosin") or default.eosin)],
                    "h_intensity": float(s.get("h_intensity", 1.0)), "e_intensity": float(s.get("e_intensity", 1.0)),
                    "background": [float(v) for v in (s.get("background") or default.background)],
                    "blur": float(default.blur if s.get("blur") is None else s["blur"])})
    return out


def stain_protocol(site: dict) -> StainProtocol:
    """The renderer's protocol of one `protocols()` entry."""
    return StainProtocol(hematoxylin=tuple(site["hematoxylin"]), eosin=tuple(site["eosin"]),
                         h_intensity=site["h_intensity"], e_intensity=site["e_intensity"],
                         background=tuple(site["background"]), blur=site["blur"])


def assign_sites(num_patients: int, names: list[str]) -> list[str]:
    """The site of each patient in patient-id order: round-robin, so the sites differ by at most one patient."""
    return [names[i % len(names)] for i in range(num_patients)] if names else [None] * num_patients
