"""benchmarks/cpt_quality.py end to end at toy size on CPU (ddp, 2 ranks): every stage runs, every arm is
trained and evaluated, and the numbers mean what they say."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.helpers.distributed import REPO_ROOT, free_port
from tests.helpers.distributed import test_env as child_env

DEMO = REPO_ROOT / "examples" / "demo_data"


def chinese_documents() -> list[str]:
    rows = [json.loads(line) for path in sorted((DEMO / "pretrain").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["target"] for r in rows if any("\u4e00" <= c <= "\u9fff" for c in r["target"])]


def test_bits_per_char_by_hand():
    """A model whose every next-token distribution is uniform over V tokens loses ln V per predicted token."""
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.cpt_quality import bits_per_char

    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids):
            return type("Out", (), {"logits": torch.zeros(*ids.shape, 16)})()

    class Chars:  # one token per character, plus a bos
        def __call__(self, text, **_):
            return {"input_ids": [0] + [1 + (ord(c) % 15) for c in text]}

    texts = ["abcd", "xyz"]  # 4 + 3 predicted tokens over 7 characters
    assert bits_per_char(Uniform(), Chars(), texts, max_length=3) == pytest.approx(math.log2(16))


def test_bits_per_char_batched_equals_one_chunk_at_a_time():
    """Right padding in a batch leaves every real token's prediction as it is alone (causal attention)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.cpt_quality import bits_per_char

    class Chars:
        def __call__(self, text, **_):
            return {"input_ids": [0] + [1 + (ord(c) % 15) for c in text]}

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=64)).eval()
    texts = ["the quick brown fox", "jumps", "over the lazy dog and far away", "ok"]
    alone = bits_per_char(model, Chars(), texts, max_length=8, batch_tokens=1)
    batched = bits_per_char(model, Chars(), texts, max_length=8, batch_tokens=64)
    assert batched == pytest.approx(alone, rel=1e-5) and alone > 0


def test_curve_read_at_equal_seconds():
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.cpt_quality import at_seconds, equal_time

    fast = [{"seconds": 0.0, "bits_per_char/zh": 8.0}, {"seconds": 10.0, "bits_per_char/zh": 4.0}]
    slow = [{"seconds": 0.0, "bits_per_char/zh": 6.0}, {"seconds": 20.0, "bits_per_char/zh": 2.0}]
    assert at_seconds(slow, "bits_per_char/zh", 5.0) == pytest.approx(5.0)
    seconds, table = equal_time({"fast": {"curve": fast, "final": fast[-1]},
                                 "slow": {"curve": slow, "final": slow[-1]}}, ["zh"])
    assert seconds == 10.0 and table == {"fast": {"zh": 4.0}, "slow": {"zh": pytest.approx(4.0)}}
    with pytest.raises(ValueError):
        at_seconds(fast, "bits_per_char/zh", 11.0)


def test_arms_chosen_by_letter_or_name():
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.cpt_quality import parse_args
    from colossal_llama2.utils.errors import UserInputError

    common = ["--english_text", "en.txt", "--chinese_text", "zh.txt"]
    assert parse_args([*common, "--arms", "d, a_base_vocab,d"]).arms == ["d_extended_mean_embeddings_first",
                                                                         "a_base_vocab"]
    assert len(parse_args(common).arms) == 4
    with pytest.raises(UserInputError, match="unknown arm"):
        parse_args([*common, "--arms", "a,x"])


def test_a_repeated_command_skips_the_stages_that_finished(tmp_path, capsys):
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.cpt_quality import Experiment

    exp = Experiment(args=None, size={}, out=tmp_path)
    counter = tmp_path / "count.txt"
    cmd = [sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(counter)!r}); "
                                 "p.write_text(str(int(p.read_text() or 0) + 1) if p.exists() else '1')"]
    exp.run(cmd, stage="once")
    exp.run(cmd, stage="once")
    assert counter.read_text() == "1" and "finished in an earlier invocation" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="stage failed"):
        exp.run([sys.executable, "-c", "raise SystemExit(3)"], stage="fails")
    assert not (tmp_path / "stages" / "fails.done").exists()  # a failed stage runs again next time


@pytest.mark.slow
@pytest.mark.stack_neutral  # the families' tests run these stages on both stacks
def test_toy_experiment_runs_every_arm_and_reports(tmp_path):
    english = tmp_path / "en.txt"
    english.write_text((DEMO / "base_english.txt").read_text(encoding="utf-8"), encoding="utf-8")
    chinese = tmp_path / "zh.txt"
    chinese.write_text("\n".join(chinese_documents()), encoding="utf-8")
    mine = tmp_path / "mine.txt"  # someone else's evaluation text
    mine.write_text("小狗在公园里跑。\n今天的天气很好。\nThe dog runs in the park.\n", encoding="utf-8")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "cpt_quality.py"), "--english_text", english,
                           "--chinese_text", chinese, "--eval_text", mine, "--size", "toy", "--out_dir", out,
                           "--master_port", str(free_port()), "--arms", "a,d"],  # b, c: d's path, other inits
                          cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((out / "results.json").read_text())
    before, arms = results["before"], results["arms"]
    assert set(arms) == {"a_base_vocab", "d_extended_mean_embeddings_first"}
    for name, arm in arms.items():
        final = arm["final"]
        assert {"bits_per_char/zh", "bits_per_char/en", "bits_per_char/mine", "generation_chars_per_s/zh"} <= set(final)
        # continual pre-training on Chinese lowers the held-out Chinese loss of every arm
        assert final["bits_per_char/zh"] < before["bits_per_char/zh"], name
        seconds = [point["seconds"] for point in arm["curve"]]
        assert seconds[0] == 0.0 and len(seconds) >= 3 and seconds == sorted(seconds), (name, seconds)
    # the extended vocabulary compresses Chinese: fewer tokens per character than the English base's
    extended, base = arms["d_extended_mean_embeddings_first"], arms["a_base_vocab"]
    assert extended["final"]["tokens_per_char/zh"] < 0.8 * before["tokens_per_char/zh"]
    assert extended["final"]["vocab_size"] > before["vocab_size"]
    assert base["final"]["tokens_per_char/zh"] == before["tokens_per_char/zh"]
    # d's first phase trains only the embeddings: its curve has that phase's checkpoints too
    assert len(extended["curve"]) > len(base["curve"])
    report = (out / "report.md").read_text(encoding="utf-8")
    for expected in ("At equal training seconds", "bits/char mine", "init_tokenizer.py", "train.py"):
        assert expected in report, expected
    assert (out / "bits_per_char.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "cpt_quality.py"), "--english_text",
                          tmp_path / "nope.txt", "--chinese_text", chinese], cwd=REPO_ROOT, env=child_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--english_text" in bad.stderr
