"""Loading prepared datasets for training: validated loading, padding collator, resumable sampler.

The three pieces train.py needs from a directory written by data preparation (see ``schema.py``):

* ``load_tokenized_dataset(paths)`` opens every part (a part dir, or a dataset dir holding parts),
  checks each part's META_FILE and concatenates them. A directory that is missing or was not written
  by our preparation scripts is refused with a ``UserInputError`` naming it.
* ``PaddingCollator`` pads a list of samples to the longest sample or to ``max_length``; padded
  labels are IGNORE_INDEX, the attention mask is 0 there, and position ids restart at 0 at every
  document boundary recorded in ``seq_lengths`` (so packed documents look like separate sequences).
* ``ResumableDistributedSampler`` shards a per-epoch shuffled order over ranks and can save and
  restore its position exactly, so a resumed run sees the very samples the interrupted run would have.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..utils.errors import UserInputError
from ..utils.logging import get_logger
from .schema import COLUMNS, FORMAT, IGNORE_INDEX, META_FILE, PART_PREFIX

logger = get_logger(__name__)


@dataclass
class TokenizedDataset:
    """The concatenated parts plus what their META_FILEs say."""

    dataset: Any  # datasets.Dataset
    part_dirs: list[Path]
    metas: list[dict] = field(default_factory=list)

    @property
    def max_length(self) -> int:
        return max(m["max_length"] for m in self.metas)

    @property
    def vocab_size(self) -> int:
        return max(m["vocab_size"] for m in self.metas)

    @property
    def kinds(self) -> set[str]:
        return {m["kind"] for m in self.metas}

    @property
    def chat_template(self) -> str | None:
        """The conversation template SFT data was rendered with (None for pretraining data).

        Parts prepared with different templates cannot be mixed: the model would learn two formats.
        """
        templates = {m["chat_template"] for m in self.metas if m.get("chat_template")}
        if len(templates) > 1:
            raise UserInputError("the dataset parts were prepared with different chat templates; prepare them "
                                 "again with one template", where="--dataset")
        return templates.pop() if templates else None

    @property
    def tokenizer_digests(self) -> set[str | None]:
        """The digests of the tokenizers the parts were prepared with (None: a part older than the digest)."""
        return {m.get("tokenizer_digest") for m in self.metas}

    @property
    def tokenizer_dirs(self) -> set[str]:
        return {m.get("tokenizer_dir", "?") for m in self.metas}

    @property
    def end_of_turn_tokens(self) -> list[str]:
        """The special tokens SFT answers end with (where generation must stop); none for pretraining data."""
        return sorted({token for m in self.metas for token in m.get("end_of_turn_tokens", [])})

    def __len__(self) -> int:
        return len(self.dataset)


def read_meta(part_dir: Path, flag: str) -> dict:
    """Read and validate one part's META_FILE; raise UserInputError if the part is not ours."""
    meta_path = part_dir / META_FILE
    if not meta_path.is_file():
        raise UserInputError(f"{part_dir} is not a dataset part written by prepare_pretrain_dataset.py / "
                             f"prepare_sft_dataset.py (no {META_FILE})", where=flag)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{meta_path} is not valid JSON: {err}", where=flag) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserInputError(f"{meta_path} has format {got!r}, this trainer reads {FORMAT!r}", where=flag)
    for key, typ in (("kind", str), ("max_length", int), ("vocab_size", int)):
        if not isinstance(meta.get(key), typ):
            raise UserInputError(f"{meta_path}: field {key!r} missing or not a {typ.__name__}", where=flag)
    return meta


def find_part_dirs(path: str | Path, flag: str = "--dataset") -> list[Path]:
    """A part dir (holds META_FILE) is itself; a dataset dir gives its ``part-*`` children in order."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"dataset directory {path} does not exist", where=flag)
    if not path.is_dir():
        raise UserInputError(f"{path} is not a directory", where=flag)
    if (path / META_FILE).exists():
        return [path]
    if path.name.startswith(PART_PREFIX) or (path / "dataset_info.json").exists():
        read_meta(path, flag)  # a part (or a datasets dir) without our META_FILE: say so precisely
    parts = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith(PART_PREFIX))
    if not parts:
        raise UserInputError(f"{path} is neither a dataset part (no {META_FILE}) nor a directory of "
                             f"{PART_PREFIX}* parts written by the preparation scripts", where=flag)
    return parts


def load_tokenized_dataset(paths: Sequence[str | Path], flag: str = "--dataset") -> TokenizedDataset:
    """Validate and open every part under ``paths`` and concatenate them (in the order given)."""
    import datasets

    if not paths:
        raise UserInputError("no dataset given", where=flag)
    part_dirs: list[Path] = []
    for path in paths:
        part_dirs.extend(find_part_dirs(path, flag))
    metas = [read_meta(p, flag) for p in part_dirs]  # validate everything before opening anything
    parts = []
    for part_dir in part_dirs:
        try:
            ds = datasets.load_from_disk(str(part_dir))
        except Exception as err:  # a half-copied or foreign directory
            raise UserInputError(f"cannot open {part_dir} with datasets.load_from_disk: {err}", where=flag) from None
        missing = [c for c in COLUMNS if c not in ds.column_names]
        if missing:
            raise UserInputError(f"{part_dir} lacks column(s) {missing}", where=flag)
        parts.append(ds.select_columns(list(COLUMNS)))
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    logger.info("dataset: %d samples from %d part(s)", len(dataset), len(part_dirs))
    return TokenizedDataset(dataset=dataset, part_dirs=part_dirs, metas=metas)


def position_ids_for(seq_lengths: Sequence[int], total: int) -> list[int]:
    """Positions restarting at 0 for every document; trailing padding continues the last count."""
    positions: list[int] = []
    for n in seq_lengths:
        positions.extend(range(n))
    start = seq_lengths[-1] if seq_lengths else 0
    positions.extend(range(start, start + total - len(positions)))
    return positions


@dataclass
class PaddingCollator:
    """Pad samples into a batch.

    ``padding_mode="longest"`` pads to the longest sample of the batch, ``"max_length"`` always to
    ``max_length``. Right padding with ``pad_token_id``; labels -100 and attention mask 0 on padding.
    ``document_ids`` (0, 1, ... per packed document, -1 on padding) lets the trainer build a
    block-diagonal attention mask. A sample longer than ``max_length`` is an error, never cut silently.
    ``pad_to_multiple_of`` rounds the longest-mode width up (fp8 matmuls need multiples of 16 tokens).
    """

    pad_token_id: int
    max_length: int
    padding_mode: str = "longest"
    pad_to_multiple_of: int = 1

    def __post_init__(self) -> None:
        if self.padding_mode not in ("longest", "max_length"):
            raise ValueError(f"padding_mode must be 'longest' or 'max_length', not {self.padding_mode!r}")

    def __call__(self, samples: Sequence[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(s["input_ids"]) for s in samples]
        if max(lengths) > self.max_length:
            raise ValueError(f"sample of {max(lengths)} tokens exceeds max_length {self.max_length}")
        width = self.max_length if self.padding_mode == "max_length" else max(lengths)
        width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(samples)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        document_ids = torch.full((n, width), -1, dtype=torch.long)
        for i, sample in enumerate(samples):
            length = lengths[i]
            seq_lengths = list(sample.get("seq_lengths") or [length])
            if sum(seq_lengths) != length or len(sample["labels"]) != length:
                raise ValueError(f"sample {i}: seq_lengths {seq_lengths} / labels do not match {length} input ids")
            input_ids[i, :length] = torch.as_tensor(sample["input_ids"], dtype=torch.long)
            labels[i, :length] = torch.as_tensor(sample["labels"], dtype=torch.long)
            attention_mask[i, :length] = 1
            position_ids[i] = torch.as_tensor(position_ids_for(seq_lengths, width), dtype=torch.long)
            document_ids[i, :length] = torch.repeat_interleave(
                torch.arange(len(seq_lengths)), torch.as_tensor(seq_lengths, dtype=torch.long))
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "position_ids": position_ids, "document_ids": document_ids}


class ResumableDistributedSampler(torch.utils.data.Sampler[int]):
    """Per-epoch shuffled, rank-sharded indices whose position can be saved and restored exactly.

    Every rank gets ``ceil(len / num_replicas)`` indices; to make the split even the first few indices
    of the epoch's order are repeated (``padding`` says how many) rather than dropping samples.
    ``state_dict()`` records the epoch and how many of this rank's indices were consumed;
    ``load_state_dict`` continues from there. Call ``advance(n)`` as samples are consumed (the
    trainer does this per micro-batch) — the sampler cannot know how far a DataLoader prefetched.
    """

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0):
        if dataset_len <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.consumed = 0  # of this rank's indices, in the current epoch
        self.num_samples = math.ceil(dataset_len / num_replicas)
        self.padding = self.num_samples * num_replicas - dataset_len

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; keeps the restored position if it is the epoch loaded from a checkpoint."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def epoch_indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        order += order[: self.padding]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.consumed :])

    def __len__(self) -> int:
        return self.num_samples - self.consumed

    def advance(self, n: int) -> None:
        self.consumed = min(self.num_samples, self.consumed + n)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "num_replicas": self.num_replicas,
                "seed": self.seed, "dataset_len": self.dataset_len, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position. Exact when world size and dataset are unchanged; otherwise the number of
        samples consumed globally is carried over (rounded down) and a warning says so."""
        self.epoch = int(state["epoch"])
        same = all(state.get(k) == getattr(self, k) for k in ("num_replicas", "seed", "dataset_len", "shuffle"))
        if same:
            self.consumed = int(state["consumed"])
        else:
            global_consumed = int(state["consumed"]) * int(state.get("num_replicas", 1))
            self.consumed = min(self.num_samples, global_consumed // self.num_replicas)
            logger.warning("sampler restored with a different world size/dataset/seed: the order differs from "
                           "the interrupted run; continuing after ~%d samples of epoch %d", global_consumed,
                           self.epoch)
