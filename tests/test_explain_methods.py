"""Attribution methods on models with known answers, plus agreement with captum / grad-cam."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from captum.attr import GuidedGradCam, IntegratedGradients
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.stats import spearmanr
from torch import nn

from idc.config import ExplainConfig
from idc.data.dataset import normalize_batch
from idc.errors import ConfigError
from idc.explain import METHODS, attribute, compute_maps, method_kwargs, resolve_targets, to_grayscale
from idc.explain.figures import map_title
from idc.explain.methods import Reference, ig_baselines, integrated_gradients, no_inplace_relu, rise_fill, rise_masks
from idc.model import build_model, inference_layout
from idc.utils import write_npz_atomic
from tests.helpers.models import REGION, RegionModel

# Fast settings per method (keyword arguments, as the driver passes them; every other argument at its default).
# IG from the blur: the default `expected` needs training patches (its completeness test passes them).
FAST = {"lime": dict(num_samples=200), "integrated_gradients": dict(steps=32, baseline="blur"),
        "smoothgrad": dict(samples=8, batch_size=8),
        "gradcam_pp": dict(batch_size=8), "scorecam": dict(batch_size=8), "layercam": dict(batch_size=8),
        "rise": dict(num_masks=400, fill="grey", batch_size=8)}


def kw(method: str, **extra) -> dict:
    return {**FAST.get(method, {}), **extra}


def settings(**overrides) -> dict:
    """The explain settings the driver reads (a plain mapping: the driver needs no config node)."""
    return {**dataclasses.asdict(ExplainConfig()), "lime_num_samples": 200, "rise_num_masks": 400, "ig_steps": 32,
            "smoothgrad_samples": 8, "batch_size": 8, "rise_fill": "grey", **overrides}


def batch(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.2 * torch.rand(n, 3, 50, 50, generator=g)


@pytest.mark.parametrize("method, ratio", [
    ("vanilla_backprop", 3), ("integrated_gradients", 3), ("smoothgrad", 3), ("guided_backprop", 3),
    ("gradcam", 3), ("gradcam_pp", 3), ("layercam", 3),
    ("rise", 1.5),  # RISE maps carry a baseline of p * E[f] everywhere, by construction
])
def test_mass_lands_in_the_region_the_model_uses(method, ratio):
    gray = to_grayscale(attribute(RegionModel(), batch(), [1, 1], method, **kw(method)))
    inside = gray[:, REGION[0], REGION[1]].mean()
    outside = np.delete(gray.reshape(2, -1), np.ravel_multi_index(np.mgrid[0:20, 30:50].reshape(2, -1), (50, 50)), 1).mean()
    assert inside > ratio * outside + 1e-6, (method, inside, outside)


def test_integrated_gradients_completeness():
    """Against the zero (grey) baseline, where f(baseline) is easy to write down; every baseline: below."""
    model = RegionModel()
    x = batch()
    raw = integrated_gradients(model, x, torch.tensor([1, 1]), steps=64, baseline="grey").numpy()
    with torch.no_grad():
        gap = (model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]).numpy()
    assert np.abs(gap).min() > 1.0
    assert np.allclose(raw.reshape(2, -1).sum(1), gap, rtol=1e-3, atol=1e-4)


def test_integrated_gradients_completeness_on_a_resnet():
    torch.manual_seed(0)
    model = build_model({"head": [16], "dropout": 0.0}).eval()
    x = batch(1)
    raw = attribute(model, x, [1], "integrated_gradients", steps=300, internal_batch_size=300, baseline="grey")
    with torch.no_grad():
        gap = (model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]).item()
    assert abs(raw.sum() - gap) < 0.05 * abs(gap) + 1e-3


def test_vanilla_backprop_is_the_input_gradient():
    model = RegionModel()
    x = batch().requires_grad_(True)
    model(x)[:, 1].sum().backward()
    assert np.allclose(attribute(model, x.detach(), [1, 1], "vanilla_backprop"), x.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_guided_gradcam_agrees_with_captum(layer):
    """As published: upsampled ReLU'd CAM x guided backprop, no normalization in between = captum's GuidedGradCam."""
    torch.manual_seed(1)
    model = no_inplace_relu(build_model({"head": [32]}).eval())
    x = batch()
    ours = attribute(model, x, [0, 1], "guided_gradcam", layer=layer)
    theirs = GuidedGradCam(model, model.get_submodule(layer)).attribute(
        x, target=torch.tensor([0, 1]), interpolate_mode="bilinear").detach().numpy()
    assert np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())
    # and not the book's min-max-normalized Grad-CAM times guided backprop (a different map scale per patch)
    cam = attribute(model, x, [0, 1], "gradcam", layer=layer)  # raw ReLU'd CAM; the book min-max scales it
    cam = (cam - cam.min(axis=(1, 2), keepdims=True)) / np.ptp(cam, axis=(1, 2), keepdims=True).clip(1e-12)
    book = cam[:, None] * attribute(model, x, [0, 1], "guided_backprop")
    assert not np.allclose(ours, book, rtol=1e-3)


@pytest.mark.parametrize("baseline", ["black", "grey", "blur", "uniform", "expected"])
def test_integrated_gradients_baselines_are_complete(baseline):
    """IG's completeness for each `explain.ig_baseline`: attributions sum to f(x) - f(baseline), averaged
    over the baselines for `expected`."""
    model = RegionModel()
    x = torch.full((2, 3, 50, 50), -0.8)
    x[:, :, REGION[0], REGION[1]] = 0.8  # an edge that blurring moves, far from every other baseline
    x[1] *= 0.9
    ref = Reference(mean_rgb=np.full(3, 128.0, np.float32),
                    patches=np.random.default_rng(0).integers(0, 256, (5, 50, 50, 3)).astype(np.uint8))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        raw = attribute(model, x, [1, 1], "integrated_gradients", steps=256, baseline=baseline, expected_k=3, reference=ref)
        torch.manual_seed(0)
        bases = ig_baselines(x, baseline, expected_k=3, reference=ref)
    assert len(bases) == (3 if baseline == "expected" else 1)
    with torch.no_grad():
        gap = np.mean([(model(x)[:, 1] - model(b)[:, 1]).numpy() for b in bases], axis=0)
    assert np.abs(gap).min() > 0.1, gap
    np.testing.assert_allclose(raw.reshape(2, -1).sum(1), gap, rtol=2e-2, atol=1e-3)
    with pytest.raises(ConfigError, match="ig_baseline"):
        attribute(model, x, [1, 1], "integrated_gradients", baseline="white")


def test_rise_fills_masked_pixels_with_the_data_sets_mean_colour():
    ref = Reference(mean_rgb=np.array([204.0, 102.0, 153.0], np.float32), patches=np.zeros((1, 50, 50, 3), np.uint8))
    x = batch()
    fill = rise_fill(x, "mean", reference=ref)
    np.testing.assert_allclose(fill.flatten().numpy(), [0.8, 0.4, 0.6], rtol=1e-6)
    assert rise_fill(x, "black").sum() == 0
    with pytest.raises(ConfigError, match="reference"):
        attribute(RegionModel(), x, [1, 1], "rise", **kw("rise", fill="mean"))
    # a model that only sees how far the region is from the fill colour: RISE with that fill finds the region
    class FromFill(nn.Module):
        def forward(self, a):
            pixels = a * 0.5 + 0.5
            s = 10 * (pixels[:, :, REGION[0], REGION[1]] - fill[None]).abs().mean(dim=(1, 2, 3))
            return torch.stack([-s, s], 1)

    def contrast(fill_kind):
        sal = attribute(FromFill(), x, [1, 1], "rise", **kw("rise", fill=fill_kind), reference=ref)
        inside = np.zeros((50, 50), bool)
        inside[REGION] = True
        return sal[:, inside].mean() - sal[:, ~inside].mean()

    # filling with the colour the model treats as "nothing" finds the region; black fill adds evidence instead
    assert contrast("mean") > 0 > contrast("black")


def test_expected_ig_splits_its_steps_over_the_baselines():
    """`explain.ig_steps` is the gradient passes per patch: `expected` runs steps // k points on each of its k
    paths (the cost of one blur path), and its map is the mean of captum's maps over those paths."""
    model, x = RegionModel(), batch(2)
    ref = Reference(mean_rgb=np.full(3, 128.0, np.float32),
                    patches=np.random.default_rng(0).integers(0, 256, (5, 50, 50, 3)).astype(np.uint8))
    ours = integrated_gradients(model, x, [1, 1], steps=6, baseline="expected", expected_k=3, reference=ref)
    bases = ig_baselines(x, "expected", expected_k=3, reference=ref)
    want = torch.stack([IntegratedGradients(model).attribute(x, baselines=b, target=[1, 1], n_steps=2) for b in bases])
    torch.testing.assert_close(ours, want.mean(0))


def test_maps_are_seeded_and_npz_byte_identical(tmp_path):
    """Same config -> byte-identical maps.npz, whatever the global RNG did before (SmoothGrad noise,
    uniform IG baseline, RISE masks)."""
    images = np.random.default_rng(0).integers(0, 256, (3, 50, 50, 3)).astype(np.uint8)
    c = settings(ig_baseline="uniform", ig_steps=4, smoothgrad_samples=3, rise_num_masks=16)
    written = []
    for i, draw in enumerate([0, 5]):
        torch.manual_seed(draw)
        torch.rand(draw + 1)
        raws, _ = compute_maps(RegionModel(), images, [1, 0, 1], ["smoothgrad", "integrated_gradients", "rise"], c, "cpu")
        written.append(write_npz_atomic(tmp_path / f"maps{i}.npz", raws).read_bytes())
    assert written[0] == written[1]
    with np.load(tmp_path / "maps0.npz") as z:
        assert sorted(z.files) == ["integrated_gradients", "rise", "smoothgrad"] and z["rise"].shape == (3, 50, 50)


def test_gradcam_agrees_with_pytorch_grad_cam():
    torch.manual_seed(2)
    model = build_model({"head": [32]}).eval()
    x = batch(3)
    ours = attribute(model, x, [1, 1, 0], "gradcam", layer="layer3")
    theirs = GradCAM(model=model, target_layers=[model.layer3])(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in (1, 1, 0)])
    compared = [(a, b) for a, b in zip(ours, theirs) if a.std() > 0 and b.std() > 0]
    assert compared, "every map was flat: nothing compared"
    for a, b in compared:
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("method, cls", [("gradcam_pp", "GradCAMPlusPlus"), ("layercam", "LayerCAM")])
def test_library_cams_are_the_unscaled_cams_of_pytorch_grad_cam(method, cls):
    """Our CAMs are pytorch-grad-cam's before its per-map min-max scaling: min-max scaled, they are the
    library's maps; unscaled, their minimum is not 0 (the shift that changed a CAM's relevance mass).
    Score-CAM goes through the same wrapper (`_unscaled`); not run here for its 256 forward passes."""
    import pytorch_grad_cam

    torch.manual_seed(2)
    model = build_model({"head": [32]}).eval()
    x, targets = batch(2), [1, 0]
    ours = attribute(model, x, targets, method, layer="layer3", batch_size=64)
    theirs = getattr(pytorch_grad_cam, cls)(model=model, target_layers=[model.layer3])(
        input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    scaled = np.stack([(m - m.min()) / (1e-7 + m.max() - m.min()) for m in ours])
    np.testing.assert_allclose(scaled, theirs, atol=1e-4)
    assert (ours >= 0).all() and ours.min() > 0.01 * ours.max()


def test_guided_backprop_agrees_with_pytorch_grad_cam():
    """captum's GuidedBackprop (ours) and pytorch-grad-cam's guided ReLU model are two implementations
    of the same rule: gradients through ReLUs only where both the input and the gradient are positive."""
    torch.manual_seed(3)
    model = build_model({"head": [32]}).eval()
    x = batch(2)
    ours = attribute(model, x, [1, 0], "guided_backprop")
    for i, t in enumerate((1, 0)):
        theirs = GuidedBackpropReLUModel(model, device="cpu")(x[i:i + 1].clone(), target_category=t)
        assert np.abs(theirs).max() > 0
        assert np.allclose(ours[i], theirs.transpose(2, 0, 1), rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


def test_lime_explains_the_region():
    rng = np.random.default_rng(0)
    images = rng.integers(90, 110, (1, 50, 50, 3)).astype(np.uint8)  # dull background
    images[0, REGION[0], REGION[1]] = rng.integers(200, 215, (20, 20, 3))  # a bright region: its own superpixels
    vis = []
    raw = attribute(RegionModel(), normalize_batch(images), [1], "lime", **kw("lime"), images=images, vis=vis)[0]
    outside = np.ones((50, 50), bool)
    outside[REGION] = False
    assert raw[REGION].mean() > 0 and raw[REGION].mean() > 5 * abs(raw[outside].mean())
    assert vis[0].shape == (50, 50, 3)


def test_rise_masks_are_shifted_soft_grids():
    m = rise_masks(32, 7, 0.5, (50, 50), seed=0)
    assert m.shape == (32, 50, 50) and 0 <= m.min() and m.max() <= 1
    assert 0.3 < m.mean() < 0.7 and not torch.equal(m[0], m[1])
    assert torch.equal(m, rise_masks(32, 7, 0.5, (50, 50), seed=0))


def test_grayscale_is_the_books_conversion():
    raw = np.zeros((1, 3, 50, 50), np.float32)
    raw[0, 0, :, :] = np.arange(2500).reshape(50, 50) - 1250  # signed: |.| matters
    g = to_grayscale(raw)
    assert g.shape == (1, 50, 50) and g.min() == 0 and g.max() == 1
    assert (g >= 0.999).mean() == pytest.approx(0.01, abs=0.01)


def test_targets_and_unknown_names():
    assert resolve_targets("label", [0, 1], [1, 1]).tolist() == [0, 1]
    assert resolve_targets("pred", [0, 1], [1, 1]).tolist() == [1, 1]
    assert resolve_targets("1", [0, 0], [0, 0]).tolist() == [1, 1]
    with pytest.raises(ConfigError, match="explain.target"):
        resolve_targets("best", [0], [0])
    with pytest.raises(ConfigError, match="explain.methods"):
        attribute(RegionModel(), batch(), [1, 1], "gradcamm")
    assert len(METHODS) == 11


def test_map_title_names_the_explained_class():
    import pandas as pd

    fp = pd.Series({"target": 0, "pred": 1, "proba": 0.8, "explained_class": 1})
    assert map_title("lime", fp) == "LIME Explanation (explains: IDC Positive)\nModel Confidence: 80.0%"
    assert map_title("gradcam", fp.drop("explained_class")).startswith("Grad-CAM (explains: IDC Negative)\nModel Confidence: 20.0%")


def test_lime_map_of_a_patch_does_not_depend_on_its_batch():
    """Each patch gets its own seeded explainer: its map alone equals its map after a neighbour with other
    superpixels (a shared explainer's RandomState would have drawn other samples for it)."""
    rng = np.random.default_rng(0)
    images = rng.integers(90, 110, (2, 50, 50, 3)).astype(np.uint8)
    images[1, REGION[0], REGION[1]] = 210  # the second patch: a bright region, other superpixels
    alone = attribute(RegionModel(), normalize_batch(images[1:]), [1], "lime", num_samples=50, images=images[1:])
    batched = attribute(RegionModel(), normalize_batch(images), [1, 1], "lime", num_samples=50, images=images)
    np.testing.assert_array_equal(batched[1], alone[0])


def test_lime_figure_shows_the_explained_class(monkeypatch):
    """LIME's boundary image comes from the explained class's weights, not from LIME's top label."""
    import lime.lime_image as li

    asked = []
    original = li.ImageExplanation.get_image_and_mask

    def spy(self, label, *a, **kw):
        asked.append(label)
        return original(self, label, *a, **kw)

    monkeypatch.setattr(li.ImageExplanation, "get_image_and_mask", spy)
    images = np.random.default_rng(0).integers(90, 110, (1, 50, 50, 3)).astype(np.uint8)
    images[0, REGION[0], REGION[1]] = 210
    for t in (0, 1):  # the model prefers class 1 here; explaining class 0 must still show class 0
        attribute(RegionModel(), normalize_batch(images), [t], "lime", num_samples=50, images=images, vis=[])
    assert asked == [0, 1]


@pytest.mark.parametrize("fill, passed", [("black", 0), ("mean", None)])
def test_lime_hide_color_reaches_lime(monkeypatch, fill, passed):
    """explain.lime_hide_color: black = 0 (the book), mean = None (lime's default: each superpixel's mean colour)."""
    import lime.lime_image as li

    seen = []
    original = li.LimeImageExplainer.explain_instance

    def spy(self, image, fn, *a, **kw):
        seen.append(kw["hide_color"])
        return original(self, image, fn, *a, **kw)

    monkeypatch.setattr(li.LimeImageExplainer, "explain_instance", spy)
    images = np.random.default_rng(0).integers(90, 110, (1, 50, 50, 3)).astype(np.uint8)
    images[0, REGION[0], REGION[1]] = 210
    raw = attribute(RegionModel(), normalize_batch(images), [1], "lime", num_samples=50, hide_color=fill, images=images)[0]
    assert seen == [passed]
    # a uniform bright region hidden with its own mean colour looks unchanged: the fill decides its weight
    assert (raw[REGION].mean() > 0) if fill == "black" else abs(raw[REGION].mean()) < 0.05
    with pytest.raises(ConfigError, match="explain.lime_hide_color"):
        attribute(RegionModel(), normalize_batch(images), [1], "lime", hide_color="white", images=images)


def test_method_defaults_are_the_explain_config_defaults():
    """Every keyword argument a method reads from explain.* defaults to ExplainConfig's value (idc/config.py
    stays the one place for defaults), and the driver passes exactly those arguments."""
    defaults = dataclasses.asdict(ExplainConfig())
    for name, m in METHODS.items():
        params = inspect.signature(m.fn).parameters
        for arg, key in m.params.items():
            assert params[arg].default == defaults[key], (name, arg, key)
        assert method_kwargs(name, defaults) == {arg: defaults[key] for arg, key in m.params.items()}


def test_method_kwargs_turn_explain_keys_into_arguments_and_take_overrides():
    e = settings(cam_layer="layer3", ig_steps=7)
    assert method_kwargs("gradcam", e) == {"layer": "layer3"}
    assert method_kwargs("integrated_gradients", e)["steps"] == 7
    assert method_kwargs("gradcam", e, {"layer": "layer2"}) == {"layer": "layer2"}  # a leaderboard variant
    with pytest.raises(ConfigError, match="gradcam takes no argument"):
        method_kwargs("gradcam", e, {"steps": 3})


def test_inference_layout_keeps_outputs_and_maps():
    """The channels-last layout of the sanity and leaderboard stages: logits and maps equal to float rounding,
    for a method of each kind (input gradient, path integral, CAM hook, perturbation)."""
    torch.manual_seed(3)
    plain = build_model({"weights": None}).eval()
    fast = inference_layout(build_model({"weights": None}).eval())
    fast.load_state_dict(plain.state_dict())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = np.random.default_rng(1).integers(0, 256, (3, 50, 50, 3)).astype(np.uint8)
    x = normalize_batch(images)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-4, rtol=1e-4)
    methods = ["vanilla_backprop", "integrated_gradients", "gradcam", "rise"]
    c = settings(ig_steps=4, ig_baseline="blur", rise_num_masks=16)
    a, _ = compute_maps(plain, images, [1, 0, 1], methods, c, "cpu")
    b, _ = compute_maps(fast, images, [1, 0, 1], methods, c, "cpu")
    for m in methods:
        scale = float(np.abs(a[m]).max())
        assert scale > 0 and np.abs(a[m] - b[m]).max() <= 1e-2 * scale, m
        assert spearmanr(a[m].ravel(), b[m].ravel())[0] > 0.999, m
