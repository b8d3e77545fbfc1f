"""train.py's entry: ``colossalai run ... train.py``, ``torchrun -m colossal_llama2 train``, ``colossal-llama2 train``."""
from __future__ import annotations

import os
import socket
from typing import Sequence

# What torchrun gives every worker; set for a run started without a launcher (one process, this machine).
SINGLE_PROCESS_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0",
                      "MASTER_ADDR": "127.0.0.1"}


def main(argv: Sequence[str] | None = None) -> int:
    from .lifecycle.launcher import protect_output_streams

    protect_output_streams()  # a launcher killed mid-run must not make the next print fail the save
    if "LOCAL_RANK" not in os.environ:  # not under torchrun: a single process
        for key, value in SINGLE_PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    from .args import parse_args
    from .loop import train

    return train(parse_args(argv), exit_process=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
