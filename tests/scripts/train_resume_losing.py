"""train.py whose resume silently loses one part of the checkpoint, named by RESUME_LOSES: ``optimizer`` (Adam's
states), ``lr_scheduler`` (the schedule position) or ``sampler`` (the data position). Resume tests run it to show
that they can see each loss."""
import os

from colossal_llama2.training import checkpoint
from colossal_llama2.utils.errors import run_cli
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
run_cli(main)
