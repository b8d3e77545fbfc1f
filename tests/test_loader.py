"""Loading prepared data for training: validation, padding collator, resumable distributed sampler."""
import json
import shutil

import pytest

from colossal_llama2.dataset.loader import (PaddingCollator, ResumableDistributedSampler, load_tokenized_dataset,
                                            position_ids_for)
from colossal_llama2.dataset.schema import IGNORE_INDEX, META_FILE, part_name
from colossal_llama2.utils.errors import UserInputError
from tests.scripts.fixture_dataset import build_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_tokenizer_dir):
    return build_dataset(tiny_tokenizer_dir, tmp_path_factory.mktemp("prepared") / "arrow", max_length=64, num_parts=3)


def test_load_concatenates_parts_in_order(prepared):
    whole = load_tokenized_dataset([prepared])
    parts = [load_tokenized_dataset([prepared / part_name(i)]) for i in range(3)]
    assert len(whole) == sum(len(p) for p in parts) > 10
    assert whole.dataset[len(parts[0])]["input_ids"] == parts[1].dataset[0]["input_ids"]
    assert whole.max_length == 64 and whole.kinds == {"pretrain"}
    assert set(whole.dataset["category"]) == {"en", "zh"}
    for row in whole.dataset:
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["labels"]) <= 64


def test_load_refuses_missing_and_foreign_dirs(prepared, tmp_path):
    with pytest.raises(UserInputError, match="does not exist") as err:
        load_tokenized_dataset([tmp_path / "nope"])
    assert err.value.where == "--dataset"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.arrow").write_bytes(b"x")
    with pytest.raises(UserInputError, match="neither a dataset part"):
        load_tokenized_dataset([foreign])
    # A part with a META_FILE of another format, and one whose META_FILE was deleted.
    bad = tmp_path / "bad"
    shutil.copytree(prepared / part_name(0), bad / part_name(0))
    meta = json.loads((bad / part_name(0) / META_FILE).read_text())
    (bad / part_name(0) / META_FILE).write_text(json.dumps({**meta, "format": "upstream"}))
    with pytest.raises(UserInputError, match="format 'upstream'"):
        load_tokenized_dataset([bad])
    (bad / part_name(0) / META_FILE).unlink()
    with pytest.raises(UserInputError, match="no colossal_llama2_meta.json"):
        load_tokenized_dataset([bad / part_name(0)])


def test_position_ids_restart_per_document():
    assert position_ids_for([3, 2], 7) == [0, 1, 2, 0, 1, 2, 3]
    assert position_ids_for([4], 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("mode", ["longest", "max_length"])
def test_collator_pads_with_ignored_labels_and_mask(mode):
    samples = [{"input_ids": [1, 5, 6, 2, 1, 7, 2], "labels": [-100, 5, 6, 2, -100, 7, 2], "seq_lengths": [4, 3]},
               {"input_ids": [1, 9, 2], "labels": [-100, 9, 2], "seq_lengths": [3]}]
    batch = PaddingCollator(pad_token_id=0, max_length=10, padding_mode=mode)(samples)
    width = 7 if mode == "longest" else 10
    assert batch["input_ids"].shape == (2, width)
    assert batch["input_ids"][1].tolist() == [1, 9, 2] + [0] * (width - 3)
    assert batch["labels"][1].tolist() == [-100, 9, 2] + [IGNORE_INDEX] * (width - 3)
    assert batch["attention_mask"].sum(1).tolist() == [7, 3]
    assert batch["position_ids"][0, :7].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert batch["document_ids"][0, :7].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert (batch["document_ids"][1, 3:] == -1).all()
    with pytest.raises(ValueError, match="exceeds max_length"):
        PaddingCollator(pad_token_id=0, max_length=5)(samples)


def test_collator_rounds_longest_width_up_for_fp8():
    samples = [{"input_ids": [1, 5, 6, 2, 7, 2, 8], "labels": [-100, 5, 6, 2, 7, 2, 8]}]
    batch = PaddingCollator(pad_token_id=0, max_length=32, padding_mode="longest", pad_to_multiple_of=16)(samples)
    assert batch["input_ids"].shape == (1, 16)
    assert batch["labels"][0, 7:].eq(IGNORE_INDEX).all() and batch["attention_mask"].sum() == 7


def test_sampler_shards_cover_everything_and_reshuffle_per_epoch():
    n, world = 11, 2
    samplers = [ResumableDistributedSampler(n, world, r, shuffle=True, seed=7) for r in range(world)]
    seen = [i for s in samplers for i in s]
    assert len(seen) == 12 and set(seen) == set(range(n))  # one sample repeated to even the split
    assert samplers[0].padding == 1
    first = list(samplers[0])
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != first
    samplers[1].set_epoch(1)
    assert set(samplers[0]) | set(samplers[1]) == set(range(n))


def test_sampler_resumes_exactly():
    full = ResumableDistributedSampler(20, 2, 1, seed=3)
    full.set_epoch(2)
    order = list(full)
    interrupted = ResumableDistributedSampler(20, 2, 1, seed=3)
    interrupted.set_epoch(2)
    interrupted.advance(4)
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = ResumableDistributedSampler(20, 2, 1, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer re-enters the saved epoch: position is kept
    assert list(resumed) == order[4:]
    assert len(resumed) == 6
    resumed.set_epoch(3)
    assert len(list(resumed)) == 10
