"""`make atlas` that dies like an OOM-killed or preempted job (SIGKILL) mid-way through a patient: after its
N-th patient's maps and index are written, before that patient's shard.json (what marks it done).

The crash is a test concern, injected here by wrapping `idc.atlas.shards.finish_shard`; the production config
has no such key. N comes from the environment: IDC_TEST_KILL_AT_PATIENT.
"""
import os
import signal

from idc.atlas import shards
from idc.cli import stage_main

AT = int(os.environ["IDC_TEST_KILL_AT_PATIENT"])
_real_finish, _count = shards.finish_shard, [0]


def dying_finish(*args, **kwargs):
    _count[0] += 1
    if _count[0] >= AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_finish(*args, **kwargs)


shards.finish_shard = dying_finish

if __name__ == "__main__":
    stage_main("atlas")()
