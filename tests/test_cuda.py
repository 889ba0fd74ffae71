"""The CUDA path: bf16 training, resume, attribution vs CPU, DDP on NCCL. Skipped (with the reason) without CUDA.

Tolerances, and why they are not zero:
- resume: cuDNN autotuning (`cudnn.benchmark`) and atomic adds in convolution backward are not bitwise
  reproducible, so an unbroken and a killed-and-resumed run agree to RESUME_ATOL on every loss and
  metric, not exactly (on CPU, tests/test_train.py demands equality).
- attribution: CUDA convolutions use TF32 by default (cuDNN), about 1e-3 relative error per layer;
  for every deterministic method the CUDA maps correlate with the CPU maps at r >= MAP_MIN_R and differ
  by at most MAP_MAX_REL_L2 in relative L2 norm. SmoothGrad draws its noise on the input's device
  (another generator stream on CUDA), so it is held only to SMOOTHGRAD_MIN_R.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import REPO, compose_cfg, copy_run, run_script

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device on this machine: the CUDA path is tested where one is present")

RESUME_ATOL = 2e-2
MAP_MIN_R, MAP_MAX_REL_L2, SMOOTHGRAD_MIN_R = 0.99, 0.05, 0.8
DETERMINISTIC = ["vanilla_backprop", "guided_backprop", "integrated_gradients", "gradcam", "guided_gradcam",
                 "gradcam_pp", "scorecam", "layercam", "rise", "lime"]


def test_bf16_autocast_is_chosen_and_training_lowers_the_loss(tiny_prepared, tiny_data_dir, tmp_path):
    from idc import train
    from idc.model import amp_settings

    if torch.cuda.is_bf16_supported():
        assert amp_settings(torch.device("cuda"), True) == (torch.bfloat16, None)
    run = copy_run(tiny_prepared, tmp_path / "bf16")
    train.run(compose_cfg(run, "device=cuda", "train.amp=true", "train.epochs=4", data_dir=tiny_data_dir))
    hist = pd.read_csv(run / "model" / "history.csv")
    assert np.isfinite(hist[["train_loss", "val_loss"]].to_numpy()).all()
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0], hist[["epoch", "train_loss"]]


def test_resume_on_cuda_gives_the_same_metrics(tiny_prepared, tiny_data_dir, tmp_path):
    from tests.test_train import SHORT, script

    unbroken = copy_run(tiny_prepared, tmp_path / "unbroken")
    assert script(unbroken, tiny_data_dir, "device=cuda").returncode == 0
    broken = copy_run(tiny_prepared, tmp_path / "broken")
    crash = REPO / "tests" / "helpers" / "crash_train.py"  # SIGKILL after 5 steps: mid epoch 2
    killed = run_script(crash, broken, tiny_data_dir, *SHORT, "device=cuda", env={"IDC_TEST_CRASH_AFTER_STEPS": "5"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = script(broken, tiny_data_dir, "device=cuda", "train.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    drop = ["seconds", "images_per_s"]
    a = pd.read_csv(unbroken / "model" / "history.csv").drop(columns=drop)
    b = pd.read_csv(broken / "model" / "history.csv").drop(columns=drop)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=RESUME_ATOL, rtol=0)
    sa, sb = (pd.read_csv(r / "model" / "history_steps.csv") for r in (unbroken, broken))
    assert sa[["split", "epoch", "step"]].equals(sb[["split", "epoch", "step"]])
    assert np.allclose(sa["loss"], sb["loss"], atol=RESUME_ATOL, rtol=0)


def _maps(model, images, targets, methods, device):
    from idc.config import ExplainConfig
    from idc.explain import compute_maps

    cfg = OmegaConf.structured(ExplainConfig)
    cfg.merge_with({"lime_num_samples": 200, "rise_num_masks": 256, "ig_steps": 16, "smoothgrad_samples": 16,
                    "batch_size": 8, "rise_fill": "grey"})  # the default fill (mean) needs reference patches
    return compute_maps(model.to(device).eval(), images, targets, methods, cfg, device)[0]


def test_attribution_maps_on_cuda_match_cpu():
    from idc.config import ModelConfig
    from idc.model import build_model

    torch.manual_seed(0)
    model = build_model(OmegaConf.structured(ModelConfig))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 50, 50, 3), dtype=np.uint8)
    targets = rng.integers(0, 2, 8)
    methods = DETERMINISTIC + ["smoothgrad"]
    cpu = _maps(model, images, targets, methods, torch.device("cpu"))
    gpu = _maps(model, images, targets, methods, torch.device("cuda"))
    for m in methods:
        a, b = cpu[m].reshape(len(images), -1).astype(np.float64), gpu[m].reshape(len(images), -1).astype(np.float64)
        r = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b) if x.std() > 0 and y.std() > 0])
        if m == "smoothgrad":
            assert r >= SMOOTHGRAD_MIN_R, (m, r)
            continue
        rel = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
        assert r >= MAP_MIN_R and rel <= MAP_MAX_REL_L2, (m, r, rel)


DDP_SCRIPT = """
import numpy as np, torch, torch.distributed as dist
from omegaconf import OmegaConf
from idc import distributed as D
from idc.config import ModelConfig
from idc.data.device_loader import DeviceLoader
from idc.model import build_model
dist.init_process_group("nccl")
torch.cuda.set_device(0)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (256, 50, 50, 3), dtype=np.uint8)
targets = (images[:, 20:30, 20:30, 0].mean((1, 2)) > 127).astype(np.int64)
loader = DeviceLoader(images, targets, np.arange(256), 64, shuffle=True, flip=True, device="cuda",
                      rank=0, world_size=1, channels_last=True)
torch.manual_seed(0)
model = build_model(OmegaConf.structured(ModelConfig)).cuda().to(memory_format=torch.channels_last)
net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
opt = torch.optim.Adamax(net.parameters(), lr=0.002)
for epoch in range(2):
    loader.set_epoch(epoch)
    for x, y in loader:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
t = torch.ones(1, device="cuda")
dist.all_reduce(t)
assert t.item() == 1.0 and dist.get_backend() == "nccl"
print("DDP-NCCL-OK", float(loss))
dist.destroy_process_group()
"""


def test_ddp_one_process_on_nccl(tmp_path):
    import shutil

    path = tmp_path / "ddp_nccl.py"
    path.write_text(DDP_SCRIPT)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node=1", str(path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "DDP-NCCL-OK" in out.stdout, (out.stdout + out.stderr)[-3000:]
    assert np.isfinite(float(out.stdout.split("DDP-NCCL-OK")[1].split()[0]))
