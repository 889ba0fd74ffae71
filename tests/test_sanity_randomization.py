"""Model parameter randomization (idc.sanity.randomization): cascading and independent copies."""
import pytest
import torch
from torch import nn

from idc.sanity.randomization import randomize_cascading, randomize_independent

BLOCKS = ["fc", "layer1", "conv1"]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

    def forward(self, x):
        return self.fc(self.layer1(self.conv1(x)))


@pytest.fixture
def trained():
    torch.manual_seed(0)
    model = Tiny()
    bn = model.layer1[1]
    with torch.no_grad():  # pretend training moved the BN statistics and affine params
        bn.running_mean.fill_(0.7)
        bn.running_var.fill_(3.0)
        bn.weight.fill_(2.0)
        bn.bias.fill_(-1.0)
    return model.eval()


def changed(a: nn.Module, b: nn.Module, block: str) -> bool:
    sa, sb = a.get_submodule(block).state_dict(), b.get_submodule(block).state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


def test_cascade_randomizes_top_blocks_only_and_leaves_the_original(trained):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    for upto in range(len(BLOCKS) + 1):
        rnd = randomize_cascading(trained, BLOCKS, upto, seed=3)
        assert rnd is not trained and not rnd.training
        for i, block in enumerate(BLOCKS):
            assert changed(trained, rnd, block) == (i < upto), (upto, block)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])


def test_same_seed_same_weights_and_cascade_matches_independent(trained):
    a = randomize_cascading(trained, BLOCKS, 2, seed=5)
    b = randomize_cascading(trained, BLOCKS, 2, seed=5)
    c = randomize_cascading(trained, BLOCKS, 2, seed=6)
    assert not changed(a, b, "layer1") and changed(a, c, "layer1")
    ind = randomize_independent(trained, "layer1", seed=5)
    assert not changed(a, ind, "layer1")
    assert not changed(trained, ind, "fc") and not changed(trained, ind, "conv1")


def test_batchnorm_inside_a_randomized_block_is_reset(trained):
    bn = randomize_independent(trained, "layer1", seed=0).layer1[1]
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_global_rng_is_untouched(trained):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    randomize_cascading(trained, BLOCKS, 3, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_resnet18_blocks_of_the_book_cascade():
    from torchvision.models import resnet18

    model = resnet18(num_classes=2).eval()
    cascade = ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
    rnd = randomize_cascading(model, cascade, len(cascade), seed=0)
    assert all(changed(model, rnd, b) for b in cascade)
    x = torch.randn(2, 3, 50, 50)
    assert torch.isfinite(rnd(x)).all()


def test_bad_arguments_raise(trained):
    with pytest.raises(ValueError, match="not a submodule"):
        randomize_independent(trained, "layer9", seed=0)
    with pytest.raises(ValueError, match="upto"):
        randomize_cascading(trained, BLOCKS, 4, seed=0)
