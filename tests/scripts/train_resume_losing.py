"""train.py whose resume silently loses one part of the checkpoint, named by RESUME_LOSES: ``optimizer`` (Adam's
states), ``lr_scheduler`` (the schedule position) or ``sampler`` (the data position). Resume tests run it to show
that they can see each loss. TRAIN_SCRIPT_WRAPS names another train.py wrapper to run instead of train.py."""
import os

from colossal_llama2.training.checkpoint import directory as checkpoint
from colossal_llama2.utils.errors import run_cli
import runpy
import sys

from train import main

LOSES = os.environ["RESUME_LOSES"]
_load, _resume = checkpoint.load_checkpoint, checkpoint.resume


def load_checkpoint(booster, model, optimizer, lr_scheduler, path):
    if LOSES == "optimizer":
        booster.load_optimizer = lambda *a, **k: None
    if LOSES == "lr_scheduler":
        booster.load_lr_scheduler = lambda *a, **k: None
    return _load(booster, model, optimizer, lr_scheduler, path)


def resume(path, booster, model, optimizer, lr_scheduler, sampler, **kwargs):
    if LOSES == "sampler":
        sampler.load_state_dict = lambda state: None
    return _resume(path, booster, model, optimizer, lr_scheduler, sampler, **kwargs)


checkpoint.load_checkpoint, checkpoint.resume = load_checkpoint, resume
if os.environ.get("TRAIN_SCRIPT_WRAPS"):  # another train.py wrapper (e.g. zero2 on CPU) with the same losses
    sys.argv[0] = os.environ["TRAIN_SCRIPT_WRAPS"]
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    run_cli(main)
