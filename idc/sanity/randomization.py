"""Model parameter randomization (Adebayo et al. 2018), as pure functions returning copies.

A *block* is a named submodule of the model (`fc`, `layer4`, ..., `conv1` for ResNet-18). Randomizing
a block re-initializes every parameterized submodule inside it with its own default PyTorch init
(`reset_parameters`): Conv2d and Linear get Kaiming-uniform weights and uniform biases.

BatchNorm inside a randomized block is reset too (`reset_parameters`: weight 1, bias 0, running mean 0,
running variance 1, batch counter 0), i.e. it becomes the identity in eval mode. Leaving the trained
statistics would keep learned per-channel scales that belong to the discarded weights; re-estimating
them on data would be a partial retraining. See docs/sanity.md.

Each block is re-initialized from its own generator seed derived from (`seed`, block name), so the
cascading copy at depth k holds exactly the randomized weights of depth k-1 plus one more block, and
the independent randomization of a block draws the same weights as the cascade does for it.
"""
from __future__ import annotations

import copy
import zlib
from typing import Sequence

import torch
from torch import nn


def block_seed(seed: int, block: str) -> int:
    """A deterministic per-block seed (stable across processes, unlike hash())."""
    return (int(seed) * 1_000_003 + zlib.crc32(block.encode())) % (2**63 - 1)


def _get_block(model: nn.Module, block: str) -> nn.Module:
    try:
        return model.get_submodule(block)
    except AttributeError as err:
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"block {block!r} is not a submodule of the model; top-level blocks: {names}") from err


def reinitialize_(module: nn.Module, seed: int) -> int:
    """Reset, in place, every submodule of `module` that has `reset_parameters`; return how many."""
    count = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()  # for _BatchNorm this also calls reset_running_stats()
                count += 1
    return count


def _randomized_copy(model: nn.Module, blocks: Sequence[str], seed: int) -> nn.Module:
    out = copy.deepcopy(model)
    for name in blocks:
        n = reinitialize_(_get_block(out, name), block_seed(seed, name))
        if n == 0:
            raise ValueError(f"block {name!r} has no module with reset_parameters; nothing to randomize")
    out.eval()
    return out


def randomize_cascading(model: nn.Module, blocks: Sequence[str], upto: int, seed: int) -> nn.Module:
    """A copy of `model` with the first `upto` blocks of `blocks` (top first) re-initialized.

    `upto=0` returns an unchanged copy (the "original" point of the cascade curve);
    `upto=len(blocks)` randomizes all of them.
    """
    if not 0 <= upto <= len(blocks):
        raise ValueError(f"upto={upto} must be between 0 and len(blocks)={len(blocks)}")
    return _randomized_copy(model, list(blocks)[:upto], seed)


def randomize_independent(model: nn.Module, block: str, seed: int) -> nn.Module:
    """A copy of `model` with only `block` re-initialized; every other weight stays trained."""
    return _randomized_copy(model, [block], seed)
