"""Run by tests/test_train.py: train a small model, once plainly and once under `accelerate launch`."""

import sys

from accelerate import PartialState
from safetensors.torch import save_file
from test_train import batches, quiet, small_model

from phi4lab.training.loop import train

model = small_model()
train(model, batches(batch=8), quiet(steps=5, grad_clip=None))
state = PartialState()          # after train(): its Accelerator set up the (CPU, gloo) process group
print(f"rank={state.process_index} world={state.num_processes} type={state.distributed_type}", flush=True)
if state.is_main_process:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
