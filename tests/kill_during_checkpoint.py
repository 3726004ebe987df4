"""Run by tests/test_train.py: train with checkpoints, and kill -9 this process at one point of the second save.

usage: kill_during_checkpoint.py OUT_DIR EVENT, EVENT one of KILL_POINTS. The kill is a real SIGKILL:
no finally blocks, no flushing, exactly what a power cut or the OOM killer does mid-write.
"""

import os
import shutil
import signal
import sys
from pathlib import Path

from test_train import batches, quiet, small_model

from phi4lab.training import loop as T

KILL_POINTS = ("mid-write", "before-swap", "after-old-rename", "after-final-rename", "during-old-delete")
out_dir, event = sys.argv[1], sys.argv[2]
saves = {"n": 0}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


real_save, real_rename, real_rmtree, real_fsync, real_unlink = (
    T.save_checkpoint, Path.rename, shutil.rmtree, T._fsync, os.unlink)


def save(*args, **kwargs):
    saves["n"] += 1
    return real_save(*args, **kwargs)


def fsync(path):
    # the first fsync of the second save comes after model.safetensors and before checksums.json
    if saves["n"] == 2 and event == "mid-write" and Path(path).name == "model.safetensors":
        die()
    return real_fsync(path)


def rename(self, target):
    if saves["n"] == 2:
        if event == "before-swap" and self.name == "checkpoint":
            die()
        result = real_rename(self, target)
        if (event, self.name) in (("after-old-rename", "checkpoint"), ("after-final-rename", "checkpoint.tmp")):
            die()
        return result
    return real_rename(self, target)


def rmtree(path, *args, **kwargs):
    if saves["n"] == 2 and event == "during-old-delete" and Path(path).name == "checkpoint.old" and Path(path).exists():
        first = next(p for p in Path(path).iterdir())
        real_unlink(first)                  # one file gone, the rest still there: then the kill
        die()
    return real_rmtree(path, *args, **kwargs)


T.save_checkpoint, T._fsync, Path.rename, shutil.rmtree = save, fsync, rename, rmtree
T.train(small_model(), batches(), quiet(steps=6, checkpoint_every=2, out_dir=out_dir))
print("finished without being killed", flush=True)
