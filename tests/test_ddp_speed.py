"""ddp plugin speed-ups that must not change the gradients."""
import re

from tests.helpers.distributed import REPO_ROOT, run_distributed


def test_sum_gradients_hook_equals_ddp_averaging():
    proc = run_distributed(REPO_ROOT / "tests" / "scripts" / "ddp_sum_hook.py", nproc=2, timeout=120)
    diff, hooked, not_ddp = re.search(r"MAX_GRAD_DIFF (\S+) HOOKED (\S+) NOT_DDP (\S+)", proc.stdout).groups()
    assert hooked == "True" and not_ddp == "False"
    assert float(diff) < 1e-6
