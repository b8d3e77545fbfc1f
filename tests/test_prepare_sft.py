"""SFT data preparation: chat template exactness, assistant-only labels, whole-turn truncation, bad roles."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from colossal_llama2.dataset.conversation import CHAT_TEMPLATE, CHAT_TEMPLATE_FILE, install_chat_template
from colossal_llama2.dataset.prepare import Options, prepare
from colossal_llama2.dataset.schema import IGNORE_INDEX, META_FILE, SUMMARY_FILE, part_name
from colossal_llama2.utils.errors import UserInputError
from tests.helpers.distributed import run_script
from tests.helpers.labels import supervised_runs

MAX_LEN = 160


def conversations(english_lines, chinese_lines):
    convs = []
    for i in range(24):
        turns = 1 + i % 3
        msgs = [{"from": "system", "content": "You answer briefly."}] if i % 4 == 0 else []
        for t in range(turns):
            q = english_lines[(i + t) % len(english_lines)][:60] + "?"
            a = (chinese_lines if (i + t) % 2 else english_lines)[(i * 3 + t) % 40][:50]
            msgs += [{"from": "human" if t % 2 == 0 else "user", "content": q}, {"from": "assistant", "content": a}]
        rec = {"messages": msgs}
        if i % 2:
            rec["category"] = "odd"
        convs.append(rec)
    return convs


def write_jsonl(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def options(tmp, tokenizer_dir, in_dir, **kw) -> Options:
    base = dict(kind="sft", data_input_dirs=str(in_dir), tokenizer_dir=str(tokenizer_dir),
                data_arrow_output_dir=str(tmp / "arrow"), data_jsonl_output_dir=str(tmp / "jsonl"),
                max_length=MAX_LEN, num_spliced_dataset_bins=2, num_proc=1, seed=3)
    base.update(kw)
    return Options(**base)


def hf_messages(rec):
    role = {"human": "user", "user": "user", "assistant": "assistant", "system": "system"}
    return [{"role": role[m["from"]], "content": m["content"]} for m in rec["messages"]]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_tokenizer_dir, english_lines, chinese_lines):
    tmp = tmp_path_factory.mktemp("sft")
    convs = conversations(english_lines, chinese_lines)
    write_jsonl(tmp / "in" / "chat.jsonl", convs)
    summary = prepare(options(tmp, tiny_tokenizer_dir, tmp / "in"))
    from datasets import load_from_disk

    rows = [r for i in range(summary["num_parts"]) for r in load_from_disk(str(tmp / "arrow" / part_name(i)))]
    return tmp, convs, summary, rows


def expected_sample(tokenizer, rec, max_length=MAX_LEN):
    """apply_chat_template of the longest prefix of whole turns that fits (None if not even one)."""
    msgs = hf_messages(rec)
    start = 1 if msgs[0]["role"] == "system" else 0
    best = None
    for end in range(start + 2, len(msgs) + 1, 2):
        ids = tokenizer.apply_chat_template(msgs[:end], chat_template=CHAT_TEMPLATE, return_dict=False)
        if len(ids) <= max_length:
            best = (ids, msgs[:end])
    return best


def test_samples_equal_apply_chat_template_and_labels_are_assistant_turns(prepared, tokenizer):
    _, convs, summary, rows = prepared
    by_ids = {tuple(r["input_ids"]): r for r in rows}
    assert len(rows) == summary["sequences"] == len(convs) - summary["dropped"].get("first_turn_too_long",
                                                                                  {"count": 0})["count"]
    for rec in convs:
        exp = expected_sample(tokenizer, rec)
        if exp is None:
            continue
        ids, msgs = exp
        row = by_ids[tuple(ids)]  # the prepared sample IS what apply_chat_template renders
        assert row["seq_lengths"] == [len(ids)] and len(ids) <= MAX_LEN
        assert row["category"] == rec.get("category", "default")
        # Supervised spans, in order, are exactly " {assistant content}</s>" of each kept turn.
        spans = supervised_runs(row["input_ids"], row["labels"])
        answers = [m["content"] for m in msgs if m["role"] == "assistant"]
        assert len(spans) == len(answers)
        for span, answer in zip(spans, answers):
            assert span[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(span[:-1]) == answer
        # The prompt before the first answer is exactly the generation prompt of the first human turn.
        first_user = next(i for i, m in enumerate(msgs) if m["role"] == "user")
        prompt = tokenizer.apply_chat_template(msgs[:first_user + 1], chat_template=CHAT_TEMPLATE,
                                               add_generation_prompt=True, return_dict=False)
        assert row["input_ids"][:len(prompt)] == prompt
        assert all(lab == IGNORE_INDEX for lab in row["labels"][:len(prompt)])
        assert row["labels"][len(prompt)] != IGNORE_INDEX


def test_whole_turn_truncation_and_drops(tmp_path, tiny_tokenizer_dir, tokenizer, english_lines):
    long_answer = " ".join(english_lines[:3])
    short = {"messages": [{"from": "human", "content": "Hi?"}, {"from": "assistant", "content": "Hello."}]}
    three = {"messages": [{"from": "human", "content": "One?"}, {"from": "assistant", "content": "First."},
                          {"from": "human", "content": "Two?"}, {"from": "assistant", "content": "Second."},
                          {"from": "human", "content": "Three?"}, {"from": "assistant", "content": long_answer}]}
    too_long = {"messages": [{"from": "human", "content": long_answer}, {"from": "assistant", "content": "x"}]}
    write_jsonl(tmp_path / "in" / "c.jsonl", [short, three, too_long])
    two_turns = tokenizer.apply_chat_template(hf_messages(three)[:4], chat_template=CHAT_TEMPLATE, return_dict=False)
    full = tokenizer.apply_chat_template(hf_messages(three), chat_template=CHAT_TEMPLATE, return_dict=False)
    max_len = len(two_turns) + 5
    assert len(full) > max_len
    summary = prepare(options(tmp_path, tiny_tokenizer_dir, tmp_path / "in", max_length=max_len,
                              num_spliced_dataset_bins=1))
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "arrow" / part_name(0)))
    assert sorted(map(tuple, rows["input_ids"])) == sorted(
        [tuple(tokenizer.apply_chat_template(hf_messages(short), chat_template=CHAT_TEMPLATE, return_dict=False)),
         tuple(two_turns)])
    d = summary["dropped"]
    assert d["turns_truncated"]["count"] == 1 and d["turns_truncated"]["tokens"] == len(full) - len(two_turns)
    assert d["first_turn_too_long"]["count"] == 1
    t = summary["tokens"]
    assert t["input"] - t["dropped"] == t["output"] == sum(map(len, rows["input_ids"]))
    assert t["input_supervised"] - t["dropped_supervised"] == t["output_supervised"]


def test_chat_template_next_to_dataset_and_installed(prepared, tiny_tokenizer_dir, tmp_path):
    tmp, convs, summary, rows = prepared
    assert (tmp / "arrow" / CHAT_TEMPLATE_FILE).read_text() == CHAT_TEMPLATE
    meta = json.loads((tmp / "arrow" / part_name(0) / META_FILE).read_text())
    assert meta["kind"] == "sft" and meta["chat_template"] == CHAT_TEMPLATE
    tok_dir = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok_dir)
    install_chat_template(tok_dir)
    from transformers import AutoTokenizer

    installed = AutoTokenizer.from_pretrained(str(tok_dir))  # no template argument: it comes from the dir
    ids = {tuple(r["input_ids"]) for r in rows}
    rec = next(c for c in convs if c["messages"][0]["from"] == "system")
    assert tuple(installed.apply_chat_template(hf_messages(rec), return_dict=False)) in ids
    assert set(rows[0]) == {"input_ids", "labels", "category", "seq_lengths"}
    assert {p["name"] for p in summary["parts"]} == {part_name(0), part_name(1)}
    assert all(set(p["categories"]) == {"default", "odd"} and min(p["categories"].values()) > 0
               for p in summary["parts"])


@pytest.mark.parametrize("messages, reason", [
    ([{"from": "assistant", "content": "a"}, {"from": "human", "content": "q"}],
     "roles out of order: messages[0] is 'assistant', expected 'human'"),
    ([{"from": "human", "content": "q"}, {"from": "robot", "content": "a"}], "unknown role messages[1].from='robot'"),
    ([{"from": "human", "content": "q"}], "roles out of order: the conversation must end with an assistant message"),
    ([{"from": "human", "content": "q"}, {"from": "system", "content": "s"}, {"from": "assistant", "content": "a"}],
     "roles out of order: messages[1] is 'system', expected 'assistant'"),
    ([{"from": "human", "content": ["q"]}, {"from": "assistant", "content": "a"}],
     "field messages[0].'content' must be a string"),
    ("hello", "field 'messages' must be a list"),
    ([], "field 'messages' is empty"),
])
def test_bad_conversation_names_file_and_line(tmp_path, tiny_tokenizer_dir, messages, reason):
    good = {"messages": [{"from": "human", "content": "q"}, {"from": "assistant", "content": "a"}]}
    write_jsonl(tmp_path / "in" / "c.jsonl", [good, {"messages": messages}, good])
    with pytest.raises(UserInputError) as err:
        prepare(options(tmp_path, tiny_tokenizer_dir, tmp_path / "in"))
    assert str(err.value).startswith(f"{tmp_path / 'in' / 'c.jsonl'}:2: {reason}")
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_sft_cli_bad_roles_exit_2_then_skip(tmp_path, tiny_tokenizer_dir):
    good = {"messages": [{"from": "human", "content": "q"}, {"from": "assistant", "content": "a"}], "category": "c"}
    bad = {"messages": [{"from": "human", "content": "q"}, {"from": "human", "content": "q"}]}
    write_jsonl(tmp_path / "in" / "c.jsonl", [good, good, bad, good])
    args = ["prepare_sft_dataset.py", "--data_input_dirs", tmp_path / "in", "--tokenizer_dir", tiny_tokenizer_dir,
            "--data_arrow_output_dir", tmp_path / "arrow", "--max_length", 64, "--num_spliced_dataset_bins", 1,
            "--num_proc", 1, "--category_weights", '{"c": 2.0}']
    proc = run_script(args, timeout=120)
    assert proc.returncode == 2
    assert f"error: {tmp_path / 'in' / 'c.jsonl'}:3: roles out of order" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    proc = run_script(args + ["--skip_bad_lines"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "arrow" / SUMMARY_FILE).read_text())
    assert summary["lines"]["bad"] == 1 and summary["bad_lines"][0]["where"].endswith("c.jsonl:3")
    assert summary["records"] == 3 and summary["documents"] == 6 and summary["sequences"] == 6
