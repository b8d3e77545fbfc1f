"""prepare_pretrain_dataset.py that pauses (10 minutes) after its PAUSE_AFTER_UNITS-th unit of work, or after its
first output part with PAUSE_AFTER_FIRST_PART=1: a test kills it there, with no race against a fast run."""
import os
import time

from colossal_llama2.dataset import prepare
from colossal_llama2.utils.errors import run_cli

PAUSE_S = 600
_process_unit, _write_parts = prepare.process_unit, prepare.write_parts
_done = {"units": 0}


def process_unit(job, tokenizer, unit):
    size = _process_unit(job, tokenizer, unit)
    _done["units"] += 1
    if _done["units"] == int(os.environ.get("PAUSE_AFTER_UNITS", "0")):
        time.sleep(PAUSE_S)
    return size


def write_parts(jobs, num_proc):
    for i, result in enumerate(_write_parts(jobs, num_proc)):
        yield result
        if i == 0 and os.environ.get("PAUSE_AFTER_FIRST_PART"):
            time.sleep(PAUSE_S)


prepare.process_unit, prepare.write_parts = process_unit, write_parts
run_cli(lambda argv: prepare.main("pretrain", argv))
