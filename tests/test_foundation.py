"""The harness itself: fixture tokenizer and model, and a real 2-rank gloo training run."""
import re

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaTokenizerFast

from tests.helpers.distributed import REPO_ROOT, run_distributed
from tests.helpers.slow import slow_tokenizer

ENGLISH = "The river runs past the old mill, and 42 children swim in the pool below."
CHINESE = "语言模型通过前面的词来预测下一个词。"


def test_fixture_tokenizer_is_llama2_like(tiny_tokenizer_dir):
    slow = slow_tokenizer(tiny_tokenizer_dir)
    fast = LlamaTokenizerFast.from_pretrained(tiny_tokenizer_dir)
    auto = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert isinstance(auto, LlamaTokenizerFast)
    for tok in (slow, fast):
        assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
        assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]  # byte fallback pieces
    for text in (ENGLISH, CHINESE, ENGLISH + " " + CHINESE):
        ids = slow(text)["input_ids"]
        assert ids[0] == 1 and 0 not in ids, "bos first, and nothing maps to <unk> thanks to byte fallback"
        assert fast(text)["input_ids"] == ids
        assert slow.decode(ids, skip_special_tokens=True) == text
        assert fast.decode(ids, skip_special_tokens=True) == text
    # Trained on English only: every Chinese character falls back to its UTF-8 bytes (3 pieces each).
    chinese_ids = slow(CHINESE, add_special_tokens=False)["input_ids"]
    assert all(3 <= i <= 258 for i in chinese_ids[1:])
    assert len(chinese_ids) >= 3 * (len(CHINESE) - 1)


def test_fixture_model_reloads_with_identical_logits(tiny_model_dir, tiny_tied_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(ENGLISH, return_tensors="pt")["input_ids"]
    for model_dir, tied in ((tiny_model_dir, False), (tiny_tied_model_dir, True)):
        a = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        b = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        assert a.config.tie_word_embeddings is tied
        assert (a.get_input_embeddings().weight.data_ptr() == a.get_output_embeddings().weight.data_ptr()) is tied
        with torch.no_grad():
            la, lb = a(ids).logits, b(ids).logits
        assert la.shape == (1, ids.shape[1], len(tokenizer))
        assert torch.equal(la, lb)


def test_two_rank_gloo_ddp_training_loss_falls(tiny_model_dir):
    steps = 8
    proc = run_distributed(REPO_ROOT / "tests/scripts/ddp_smoke_train.py", [tiny_model_dir, steps],
                           launcher="colossalai", timeout=300)
    losses = [float(v) for _, v in re.findall(r"SMOKE_LOSS (\d+) ([\d.]+)", proc.stdout)]
    assert len(losses) == steps, proc.stdout[-3000:]
    assert losses[-1] < 0.7 * losses[0], losses


def test_launch_env_drops_what_colossalai_run_cannot_quote(monkeypatch):
    from colossal_llama2.utils.launch_env import colossalai_run_env

    env = colossalai_run_env({"MAKEOVERRIDES": "${-*-command-variables-*-}", "MAKEFLAGS": " -- X=1",
                              "ODD": 'say "hi"', "PATH": "/usr/bin", "HF_HUB_OFFLINE": "1"})
    assert env == {"PATH": "/usr/bin", "HF_HUB_OFFLINE": "1"}


def test_colossalai_run_works_under_make_overrides(tiny_model_dir, monkeypatch):
    # What CI does: `make test PYTEST_ARGS=...` exports MAKEOVERRIDES to every child process.
    monkeypatch.setenv("MAKEOVERRIDES", "${-*-command-variables-*-}")
    proc = run_distributed(REPO_ROOT / "tests/scripts/ddp_smoke_train.py", [tiny_model_dir, 2],
                           launcher="colossalai", timeout=300)
    assert len(re.findall(r"SMOKE_LOSS \d+ [\d.]+", proc.stdout)) == 2
