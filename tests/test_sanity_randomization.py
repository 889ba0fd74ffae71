"""Model parameter randomization (idc.scores.randomization): cascading and independent copies."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from idc.scores.randomization import (block_names, cascade_models, logit_change, logits_of, randomize_cascading,
                                      randomize_independent, uncovered_parameters)

BLOCKS = ["fc", "layer1", "conv1+bn1"]
SCHEMES = ["model_init", "reset_parameters"]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

    def forward(self, x):
        return self.fc(self.layer1(self.bn1(self.conv1(x))))


def pretend_trained(model):
    """Move every BatchNorm's statistics and affine parameters away from their init."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.fill_(0.7)
            bn.running_var.fill_(3.0)
            bn.weight.fill_(2.0)
            bn.bias.fill_(-1.0)
    return model.eval()


@pytest.fixture
def trained():
    torch.manual_seed(0)
    return pretend_trained(Tiny())


def changed(a: nn.Module, b: nn.Module, block: str) -> bool:
    for name in block_names(block):
        sa, sb = a.get_submodule(name).state_dict(), b.get_submodule(name).state_dict()
        if not any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point()):
            return False
    return True


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cascade_randomizes_top_blocks_only_and_leaves_the_original(trained, scheme):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    for upto in range(len(BLOCKS) + 1):
        rnd = randomize_cascading(trained, BLOCKS, upto, 3, scheme, Tiny)
        assert rnd is not trained and not rnd.training
        for i, block in enumerate(BLOCKS):
            assert changed(trained, rnd, block) == (i < upto), (upto, block)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_weights_and_cascade_matches_independent(trained, scheme):
    a = randomize_cascading(trained, BLOCKS, 2, 5, scheme, Tiny)
    b = randomize_cascading(trained, BLOCKS, 2, 5, scheme, Tiny)
    c = randomize_cascading(trained, BLOCKS, 2, 6, scheme, Tiny)
    assert not changed(a, b, "layer1") and changed(a, c, "layer1")
    ind = randomize_independent(trained, "layer1", 5, scheme, Tiny)
    assert not changed(a, ind, "layer1")
    assert not changed(trained, ind, "fc") and not changed(trained, ind, "conv1+bn1")
    stepwise = dict(cascade_models(trained, BLOCKS, 5, scheme, Tiny))
    assert all(not changed(stepwise[2], a, blk) for blk in BLOCKS) and len(stepwise) == 3
    bottom_up = randomize_cascading(trained, BLOCKS[::-1], 3, 5, scheme, Tiny)  # sMPRT's order
    top_down = randomize_cascading(trained, BLOCKS, 3, 5, scheme, Tiny)
    assert all(not changed(bottom_up, top_down, blk) for blk in BLOCKS)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batchnorm_inside_a_randomized_block_is_reset_the_stems_too(trained, scheme):
    rnd = randomize_independent(trained, "layer1", 0, scheme, Tiny)
    stem = randomize_independent(trained, "conv1+bn1", 0, scheme, Tiny)
    for bn in (rnd.layer1[1], stem.bn1):
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert torch.equal(rnd.bn1.running_var, trained.bn1.running_var)  # the stem's BN is not in layer1


def test_model_init_draws_from_the_networks_own_init_not_reset_parameters():
    """torchvision's ResNet draws convolutions from Kaiming-normal (fan_out, ReLU gain): sd = sqrt(2 / fan_out);
    reset_parameters' Kaiming-uniform(a=sqrt(5)) gives sd = 1 / sqrt(3 fan_in), several times smaller."""
    from idc.model import build_model

    def factory():
        return build_model({"head": [16], "dropout": 0.0})

    torch.manual_seed(0)
    model = pretend_trained(factory())
    own = randomize_independent(model, "layer3", 1, "model_init", factory).layer3[0].conv1.weight
    reset = randomize_independent(model, "layer3", 1, "reset_parameters", factory).layer3[0].conv1.weight
    fan_out, fan_in = own.shape[0] * 9, own.shape[1] * 9
    assert own.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert reset.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.05)
    assert own.var().item() > 3 * reset.var().item()


def test_every_randomized_block_moves_the_logits():
    """The book's model, default cascade: each block alone, and each cascade step, changes the logits
    (so "the map did not change" cannot mean "the model did not change"); the cascade covers every parameter."""
    from idc.config import SanityConfig
    from idc.model import build_model

    cascade = SanityConfig().cascade

    def factory():
        return build_model({"head": [32, 16], "dropout": 0.5})

    torch.manual_seed(1)
    model = factory().eval()  # a different draw than any block seed
    with torch.no_grad():  # BatchNorm as after training: statistics and affine parameters moved, units alive
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
    assert uncovered_parameters(model, cascade) == []
    x = torch.randn(2, 3, 50, 50)
    ref = logits_of(model, x)
    previous = ref
    for (depth, rnd), block in zip(cascade_models(model, cascade, 0, "model_init", factory), cascade):
        alone = logits_of(randomize_independent(model, block, 0, "model_init", factory), x)
        assert logit_change(ref, alone)["mean_abs_logit_change"] > 1e-3, block
        step = logits_of(rnd, x)
        assert np.isfinite(step).all()
        assert logit_change(previous, step)["mean_abs_logit_change"] > 1e-3, (depth, block)
        previous = step


def test_logit_change_known_answer():
    ref = np.array([[0.0, 1.0], [2.0, 0.0]])
    other = np.array([[0.5, 0.0], [2.0, 1.0]])
    out = logit_change(ref, other)
    assert out["mean_abs_logit_change"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert out["prediction_agreement"] == pytest.approx(0.5)  # the first patch's class flipped
    assert logit_change(ref, ref) == {"mean_abs_logit_change": 0.0, "prediction_agreement": 1.0}


def test_uncovered_parameters_names_what_stays_trained(trained):
    assert uncovered_parameters(trained, ["fc", "layer1"]) == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"]


def test_global_rng_is_untouched(trained):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    randomize_cascading(trained, BLOCKS, 3, 0, "model_init", Tiny)
    assert torch.equal(torch.rand(3), expected)


def test_bad_arguments_raise(trained):
    with pytest.raises(ValueError, match="not a submodule"):
        randomize_independent(trained, "layer9", 0, "model_init", Tiny)
    with pytest.raises(ValueError, match="upto"):
        randomize_cascading(trained, BLOCKS, 4, 0, "model_init", Tiny)
    with pytest.raises(ValueError, match="factory"):
        randomize_independent(trained, "fc", 0, "model_init", None)
    with pytest.raises(ValueError, match="not known"):
        randomize_independent(trained, "fc", 0, "xavier", Tiny)
