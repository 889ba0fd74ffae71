"""`make train` that dies like an OOM-killed or preempted job (SIGKILL) after N optimizer steps.

The crash is a test concern, injected here by wrapping `idc.train.train_step`; the production config
has no such key. N comes from the environment: IDC_TEST_CRASH_AFTER_STEPS.
"""
import os
import signal

from idc import train
from idc.cli import stage_main

AFTER = int(os.environ["IDC_TEST_CRASH_AFTER_STEPS"])
_real_step, _count = train.train_step, [0]


def crashing_step(*args, **kwargs):
    out = _real_step(*args, **kwargs)
    _count[0] += 1
    if _count[0] >= AFTER:
        os.kill(os.getpid(), signal.SIGKILL)
    return out


train.train_step = crashing_step

if __name__ == "__main__":
    stage_main("train")()
