"""Model parameter randomization (Adebayo et al. 2018), as pure functions returning copies.

A *block* is one submodule name of the model (`fc`, `layer4`, ...) or several joined by `+`
(`conv1+bn1`: the stem's convolution with its BatchNorm). ResNet-18's blocks `layer1..4` hold their
BatchNorms; the stem's `bn1` is a top-level module, so the default cascade names it with `conv1`.

Two re-initialization schemes (`sanity.reinit`):
- `model_init` (default): the block takes the weights of a freshly built network (`factory()`, i.e.
  `idc.model.build_model`), so it is re-drawn from the network's own init scheme: torchvision's ResNet
  draws convolutions from Kaiming-normal (fan_out, ReLU gain), BatchNorm weight 1 / bias 0, and the head's
  Linear layers PyTorch's default. This is the distribution the trained weights started from.
- `reset_parameters`: every submodule's own `reset_parameters()` (Kaiming-uniform with a=sqrt(5) for
  convolutions, whose variance is 3-6x smaller than the network's init for ResNet's 3x3 convolutions).

BatchNorm running statistics: in both schemes a randomized block's BatchNorm gets the state of a
freshly initialized layer (running mean 0, running variance 1, counter 0), so in eval mode it is the
identity. The trained statistics belong to the discarded weights (keeping them would rescale random
features by statistics of trained ones), and re-estimating them on data would adapt the randomized
network to the data, a (partial) retraining that the test is meant to exclude. See docs/sanity.md.

Each block is re-initialized from a generator seed derived from (`seed`, block name), so the cascading
copy at depth k holds the randomized weights of depth k-1 plus one more block, the independent
randomization of a block draws the same weights as the cascade does, and a bottom-up cascade (sMPRT)
ends at the same fully randomized network as the top-down one.
"""
from __future__ import annotations

import copy
import zlib
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

REINIT_SCHEMES = ("model_init", "reset_parameters")


def block_seed(seed: int, block: str) -> int:
    """A deterministic per-block seed (stable across processes, unlike hash())."""
    return (int(seed) * 1_000_003 + zlib.crc32(block.encode())) % (2**63 - 1)


def block_names(block: str) -> List[str]:
    """`conv1+bn1` -> ["conv1", "bn1"]."""
    return [b for b in block.split("+") if b]


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"block {name!r} is not a submodule of the model; top-level blocks: {names}") from err


def reinitialize_(model: nn.Module, block: str, seed: int, scheme: str = "model_init",
                  factory: Optional[Callable[[], nn.Module]] = None) -> int:
    """Re-initialize, in place, every module named in `block`; return how many parameters were redrawn."""
    if scheme not in REINIT_SCHEMES:
        raise ValueError(f"reinit scheme {scheme!r} is not known; choose from {list(REINIT_SCHEMES)}")
    targets = [(name, _get(model, name)) for name in block_names(block)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if scheme == "model_init":
            if factory is None:
                raise ValueError("reinit scheme 'model_init' needs a factory that builds a fresh model")
            fresh = factory()
            for name, module in targets:
                module.load_state_dict(_get(fresh, name).state_dict())  # weights and BatchNorm buffers
        else:
            for _, module in targets:
                for sub in module.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()  # for _BatchNorm this also calls reset_running_stats()
    count = sum(p.numel() for _, m in targets for p in m.parameters())
    if count == 0:
        raise ValueError(f"block {block!r} has no parameters; nothing to randomize")
    return count


def randomized_copy(model: nn.Module, blocks: Sequence[str], seed: int, scheme: str = "model_init",
                    factory: Optional[Callable[[], nn.Module]] = None) -> nn.Module:
    """A copy of `model` (eval mode, same device) with every block in `blocks` re-initialized."""
    out = copy.deepcopy(model)
    device = next(model.parameters()).device
    for block in blocks:
        reinitialize_(out, block, block_seed(seed, block), scheme, factory)
    return out.to(device).eval()


def randomize_cascading(model: nn.Module, blocks: Sequence[str], upto: int, seed: int, scheme: str = "model_init",
                        factory: Optional[Callable[[], nn.Module]] = None) -> nn.Module:
    """A copy with the first `upto` blocks of `blocks` re-initialized (`blocks` in cascade order:
    top first for the classic test, bottom first for sMPRT). `upto=0` is an unchanged copy."""
    if not 0 <= upto <= len(blocks):
        raise ValueError(f"upto={upto} must be between 0 and len(blocks)={len(blocks)}")
    return randomized_copy(model, list(blocks)[:upto], seed, scheme, factory)


def cascade_models(model: nn.Module, blocks: Sequence[str], seed: int, scheme: str = "model_init",
                   factory: Optional[Callable[[], nn.Module]] = None) -> Iterator[Tuple[int, nn.Module]]:
    """(depth, copy) for depth 1..len(blocks), each step one more block re-initialized: the same models as
    `randomize_cascading(model, blocks, depth, ...)`, one fresh block per step instead of `depth`."""
    current = copy.deepcopy(model)
    for depth, block in enumerate(blocks, start=1):
        reinitialize_(current, block, block_seed(seed, block), scheme, factory)
        yield depth, copy.deepcopy(current).eval()


def randomize_independent(model: nn.Module, block: str, seed: int, scheme: str = "model_init",
                          factory: Optional[Callable[[], nn.Module]] = None) -> nn.Module:
    """A copy with only `block` re-initialized; every other weight stays trained."""
    return randomized_copy(model, [block], seed, scheme, factory)


def uncovered_parameters(model: nn.Module, blocks: Sequence[str]) -> List[str]:
    """Parameters that no block of the cascade contains (they stay trained even at full depth).
    Raises ValueError for a block name that is not a submodule."""
    for block in blocks:
        for name in block_names(block):
            _get(model, name)
    prefixes = [name + "." for block in blocks for name in block_names(block)]
    return [n for n, _ in model.named_parameters() if not any(n.startswith(p) for p in prefixes)]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model.eval()(x).float().cpu().numpy()


def logit_change(ref: np.ndarray, other: np.ndarray) -> dict:
    """How far a randomized model moved: mean |change in logits| over patches and classes, and the share
    of patches whose predicted class is still the trained model's."""
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return dict(mean_abs_logit_change=float(np.abs(other - ref).mean()),
                prediction_agreement=float(np.mean(ref.argmax(1) == other.argmax(1))))
