"""Attribution methods (one registry), the batched driver, book-style figures and the explain stage."""
from idc.explain.driver import attribute, compute_maps, resolve_targets, to_grayscale
from idc.explain.methods import METHODS, get_method

__all__ = ["METHODS", "attribute", "compute_maps", "get_method", "resolve_targets", "to_grayscale"]
