"""The trainer's numbers do not move when its code is reorganised.

A fixed-seed 2-rank CPU ddp run that goes through every part of the loop (NEFTune, gradient accumulation
with no_sync, clipping, warmup + cosine schedule, periodic evaluation, a mid-run save) is compared with
``tests/data/train_reference.json``. Regenerate only for an intended change of the numbers:

    python -m tests.test_train_reference --write
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers.distributed import REPO_ROOT, run_distributed

REFERENCE = Path(__file__).parent / "data" / "train_reference.json"
# Relative tolerances. The same code gives slightly different float sums on different CPUs (vector widths of the
# kernels, gloo's reduction order): seen up to 2.4e-6 on the losses and 1.1e-4 on the gradient norm between two
# x86 machines. A real change of the numbers (a denominator that counts padding, an accumulation that forgets to
# divide) moves them by percents.
RTOL = {"grad_norm": 1e-3}
RTOL_DEFAULT = 2e-5


def reference_args(model_dir: Path, data: dict, out: Path) -> list[str]:
    return ["--pretrained", model_dir, "--dataset", data["train"], "--plugin", "ddp", "--max_length", 64,
            "--micro_batch_size", 1, "--accumulation_steps", 2, "--lr", 1e-2, "--seed", 11, "--use_neft",
            "--padding_mode", "longest", "--max_steps", 6, "-s", 2, "--gradient_clipping", 0.5,
            "--save_interval", 3, "--save_dir", out / "ckpt", "--tensorboard_dir", out / "tb",
            "--config_file", out / "config.json", "--eval_dataset", data["eval"], "--eval_interval", 3]


def record_run(model_dir: Path, data: dict, out: Path) -> dict:
    run_distributed(REPO_ROOT / "train.py", reference_args(model_dir, data, out), timeout=240)
    rows = [json.loads(line) for line in (out / "tb" / "metrics.jsonl").read_text().splitlines()]
    keep = ("loss", "grad_norm", "lr", "eval/loss", "eval/loss/en", "eval/loss/zh")
    return {"steps": [{"step": r["step"], **{k: r[k] for k in keep if k in r}} for r in rows],
            "checkpoints": sorted(p.name for p in (out / "ckpt").iterdir())}


@pytest.fixture(scope="module")
def reference_data(tmp_path_factory, tiny_tokenizer_dir):
    from tests.test_train import build_reference_data

    return build_reference_data(tmp_path_factory.mktemp("reference_data"), tiny_tokenizer_dir)


def test_per_step_numbers_match_the_recorded_reference(tmp_path, tiny_model_dir, reference_data):
    expected = json.loads(REFERENCE.read_text())
    got = record_run(tiny_model_dir, reference_data, tmp_path)
    assert got["checkpoints"] == expected["checkpoints"]
    assert [r["step"] for r in got["steps"]] == [r["step"] for r in expected["steps"]]
    for want, have in zip(expected["steps"], got["steps"]):
        assert set(have) == set(want), want["step"]
        for key, value in want.items():
            assert have[key] == pytest.approx(value, rel=RTOL.get(key, RTOL_DEFAULT), abs=0), (want["step"], key)


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    from colossal_llama2.tiny_base import build_tiny_llama, build_tiny_tokenizer
    from tests.test_train import build_reference_data

    root = Path(tempfile.mkdtemp())
    tok = build_tiny_tokenizer([Path(__file__).parent / "data" / "english.txt"], root / "tok")
    model = build_tiny_llama(tok, root / "model")
    result = record_run(model, build_reference_data(root / "data", tok), root / "run")
    REFERENCE.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {REFERENCE}: {len(result['steps'])} rows")
