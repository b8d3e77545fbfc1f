"""train.py whose checkpoint save at or after step SLOW_SAVE_FROM_STEP pauses SLOW_SAVE_S seconds in the middle
(after the weights and optimizer are written, before the directory is complete): lets tests stop or kill a run
mid-save."""
import os
import time

from colossal_llama2.training.checkpoint import directory as checkpoint
from colossal_llama2.utils.errors import run_cli
from train import main

_save, _capture = checkpoint.save_checkpoint, checkpoint.capture_rng_state
_slow = {"on": False}


def save_checkpoint(*args, global_step, **kwargs):
    _slow["on"] = global_step >= int(os.environ.get("SLOW_SAVE_FROM_STEP", "0"))
    return _save(*args, global_step=global_step, **kwargs)


def capture_rng_state():
    if _slow["on"]:
        time.sleep(float(os.environ.get("SLOW_SAVE_S", "30")))
    return _capture()


checkpoint.save_checkpoint, checkpoint.capture_rng_state = save_checkpoint, capture_rng_state
run_cli(main)
