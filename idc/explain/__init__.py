"""Attribution methods (one registry), the batched driver, patch selection, book-style figures and the
explain stage (`idc.explain.stage`)."""
from idc.explain.driver import attribute, capped, compute_maps, method_kwargs, resolve_targets, to_grayscale
from idc.explain.methods import METHODS, get_method

__all__ = ["METHODS", "attribute", "capped", "compute_maps", "get_method", "method_kwargs", "resolve_targets",
           "to_grayscale"]
