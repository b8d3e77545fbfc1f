"""Forked worker pools for data preparation.

The workers are the parallelism, so each tokenizes on one thread. ``TOKENIZERS_PARALLELISM=false`` is set while
the pool forks: a worker then inherits it, and the tokenizers library does not print its "The current process just
got forked, after parallelism has already been used" warning in every worker (it checks the variable as the child
starts). The parent keeps its own setting.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from contextlib import contextmanager


def can_fork() -> bool:
    return "fork" in mp.get_all_start_methods()


@contextmanager
def fork_pool(processes: int):
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = mp.get_context("fork").Pool(processes)
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:
        yield pool
