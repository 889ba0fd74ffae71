"""The book's model: torchvision ResNet-18 with a 512-256-2 head; checkpoints; batched inference."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision import models
from tqdm import tqdm

from idc.data.dataset import normalize_batch
from idc.errors import CheckpointError, ConfigError
from idc.utils import atomic_path

log = logging.getLogger("idc")
CHECKPOINT_KEYS = ("model", "model_cfg", "epoch")


def as_dict(model_cfg) -> dict:
    if OmegaConf.is_config(model_cfg):
        return OmegaConf.to_container(model_cfg, resolve=True)
    return dict(model_cfg)


def imagenet_weights():
    """torchvision's ImageNet weights, only if their file is already in the local torch hub cache."""
    weights = models.ResNet18_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.exists():
        raise ConfigError(
            f"model.weights=imagenet needs {cached.name} in {cached.parent}, and this machine cannot download it. "
            f"Copy the file there (from {weights.url}) or use model.weights=null (the default, as the book)."
        )
    return weights


def build_model(model_cfg) -> nn.Module:
    cfg = as_dict(model_cfg)
    if cfg.get("arch", "resnet18") != "resnet18":
        raise ConfigError(f"model.arch={cfg['arch']!r} is not supported; use model.arch=resnet18")
    weights = None
    if cfg.get("weights"):
        if cfg["weights"] != "imagenet":
            raise ConfigError(f"model.weights={cfg['weights']!r} is not known; use null or imagenet")
        weights = imagenet_weights()
    model = models.resnet18(weights=weights)
    layers, width = [], model.fc.in_features
    for size in cfg.get("head", [512, 256]):
        layers += [nn.Linear(width, size), nn.ReLU(), nn.BatchNorm1d(size), nn.Dropout(cfg.get("dropout", 0.5))]
        width = size
    layers.append(nn.Linear(width, cfg.get("num_classes", 2)))
    model.fc = nn.Sequential(*layers)
    return model


def inference_layout(model: nn.Module) -> nn.Module:
    """`model` (in place) with its convolution weights in channels-last memory format, for the stages that only
    run a trained model (`make sanity`, `make leaderboard`): the same weights, outputs equal to float rounding
    (logits within ~3e-5), and on CPU 10-15% more images/s forward and forward + backward to the input
    (docs/benchmarks.md). Gradients to the input come back channels-last strided. Training, evaluation and
    explain keep the default layout, so their outputs stay bit-identical to earlier runs."""
    return model.to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_checkpoint(path, payload: dict) -> Path:
    """torch.save via a temp file and rename: a crash never leaves a half-written checkpoint, a full disk
    is one line, and weights holding NaN or infinite values are refused before anything is written."""
    bad = non_finite_weight(payload.get("model", {}))
    if bad:
        raise CheckpointError(f"refusing to write {path}: the weights hold NaN or infinite values ({bad}); "
                              "training diverged: lower train.lr and re-run `make train`")
    with atomic_path(path, size_hint=tensor_bytes(payload)) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def non_finite_weight(state: dict) -> Optional[str]:
    """The name of the first floating-point tensor of a state dict holding NaN or infinite values, or None."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        if value.device.type == "cpu" and value.dtype != torch.bfloat16:  # numpy: ~100x faster than torch on CPU
            finite = bool(np.isfinite(value.detach().numpy()).all())
        else:
            finite = bool(torch.isfinite(value).all())
        if not finite:
            return name
    return None


def tensor_bytes(obj) -> int:
    """The bytes of every tensor in a (nested) checkpoint payload: about the size torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def read_checkpoint(path, device="cpu", fix: str = "re-run `make train` to write a new one") -> dict:
    """The checkpoint dict (weights only: no code in the file runs). `fix` ends the error message."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointError(f"{path} is not a readable idc checkpoint ({load_error_reason(err)}); {fix}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: it was not written by idc's train stage; {fix}")
    return ckpt


def load_error_reason(err: Exception) -> str:
    """torch.load's error in a few words, without torch's advice to retry with weights_only=False: that
    would run whatever code the file carries, and an idc checkpoint never needs it."""
    text = str(err)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0]
        detail = " ".join(detail.split()).split(". ")[0].rstrip(".") if "WeightsUnpickler error:" in text else ""
        if "Unsupported global" in detail:
            return f"it holds Python objects besides tensors, refused for safety: {detail}"
        return "damaged or not a PyTorch checkpoint" + (f": {detail}" if detail else "")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def load_model(path, device="cpu", data_hash: Optional[str] = None, model_cfg=None) -> Tuple[nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint dict). Mismatches raise CheckpointError, not a traceback."""
    ckpt = read_checkpoint(path, device)
    if model_cfg is not None:
        want, have = as_dict(model_cfg), ckpt["model_cfg"]
        keys = ("arch", "head", "num_classes")
        if any(want.get(k) != have.get(k) for k in keys):
            raise CheckpointError(
                f"{path} holds a {dict((k, have.get(k)) for k in keys)} model but the config asks for "
                f"{dict((k, want.get(k)) for k in keys)}; use the matching model.* overrides or retrain (`make train`)"
            )
    if data_hash is not None and ckpt.get("data_hash") not in (None, data_hash):
        raise CheckpointError(
            f"{path} was trained on a different data/patches.csv (hash {str(ckpt.get('data_hash'))[:12]} vs "
            f"{data_hash[:12]}); retrain with `make train`, or point run.dir at the run that matches this data"
        )
    bad = non_finite_weight(ckpt["model"]) if isinstance(ckpt["model"], dict) else None
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite weights ({bad}): training diverged or the file was "
                              "damaged; retrain with `make train` (a lower train.lr if the loss diverged)")
    model = build_model({**ckpt["model_cfg"], "weights": None})
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{path} does not fit the configured architecture ({first}); retrain with `make train`") from None
    return model.to(device).eval(), ckpt


def amp_settings(device: torch.device, enabled: bool):
    """(autocast dtype or None, GradScaler or None): bf16 where the GPU supports it, else fp16 + scaler."""
    if not enabled or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, images, *, rows=None, batch_size: int = 256, device=None, amp_dtype=None,
            targets=None, on_loss: Optional[Callable] = None, desc: Optional[str] = "predict") -> np.ndarray:
    """Softmax probabilities [n, classes] of a batch of images, in eval mode, `batch_size` at a time.

    The one inference function: training's validation, evaluate, landscape, LIME's classifier
    function and the deletion curves all call it. `images`: uint8 NHWC (numpy, a memory-mapped cache,
    a tensor; normalized here like the transforms) or a float NCHW tensor that is already normalized.
    `rows` picks rows of `images` batch by batch (the cache is never copied whole). With `targets`
    (aligned with the selected rows) and `on_loss`, each batch's cross-entropy goes to `on_loss(loss, n)`.
    `amp_dtype` runs the forward pass under autocast; `desc=None` hides the progress bar.
    """
    if device is None:  # where the input is, else where the model is
        device = images.device if isinstance(images, torch.Tensor) else \
            next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    n = len(rows) if rows is not None else len(images)
    model.eval()
    out = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, disable=desc is None):
        sel = slice(start, start + batch_size)
        batch = images[rows[sel]] if rows is not None else images[sel]
        if isinstance(batch, torch.Tensor) and batch.is_floating_point():
            x = batch.to(device)
        else:
            x = normalize_batch(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch, device=device)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        if on_loss is not None:
            y = torch.as_tensor(np.asarray(targets[sel]), dtype=torch.long, device=device)
            on_loss(nn.functional.cross_entropy(logits, y), len(y))
        out.append(torch.softmax(logits, dim=1))
    if not out:
        return np.zeros((0, 2), dtype=np.float32)
    return torch.cat(out).cpu().numpy()


@contextlib.contextmanager
def counting_images(arch: type = models.ResNet):
    """Count the images that go through any `arch` network while the block runs (every model: trained,
    randomized, memorizing): {'images': all forward passes, 'with_grad': those with autograd on, i.e. a
    backward pass may follow}. What a stage's maps cost in network passes (make bench compares the wall
    time with it)."""
    counts = {"images": 0, "with_grad": 0}

    def hook(module, args, _output):
        if isinstance(module, arch) and args and torch.is_tensor(args[0]):
            counts["images"] += int(args[0].shape[0])
            counts["with_grad"] += int(args[0].shape[0]) if torch.is_grad_enabled() else 0

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()
