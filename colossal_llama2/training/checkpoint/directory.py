"""Checkpoints: ``<save_dir>/epoch-E_step-S/{modeling/, optimizer/, lr_scheduler, running_states.json}``.

* ``modeling/`` is a complete Hugging Face checkpoint (config.json, generation_config.json, sharded
  safetensors + index, tokenizer files) that plain transformers loads without this project.
* E is the epoch the checkpoint was taken in (0-based), S the number of optimizer steps done in total.
* ``running_states.json`` holds the loop position (epoch, step in epoch, sampler position, global step)
  and every rank's RNG states (python, numpy, torch CPU, CUDA), so a resumed run continues exactly.
* Atomic: all ranks write into ``.epoch-E_step-S.tmp``; after a barrier rank 0 renames it. A crash
  leaves only a dot-directory that is never mistaken for a checkpoint (and is cleaned by the next save).
"""
from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ...tokenizer.hf_files import save_tokenizer
from ...utils.errors import UserInputError
from ...utils.logging import get_logger
from ...utils.stack import transformers_5
from .optimizer_states import (has_rank_states, load_master_weights, load_rank_states, save_master_weights,
                               save_rank_states, torchao_optimizer)
from .tied_weights import check_still_tied, saving_tied_once, tied_names

logger = get_logger(__name__)

CHECKPOINT_RE = re.compile(r"^epoch-(\d+)_step-(\d+)$")
RUNNING_STATES = "running_states.json"
OPTIMIZER_FILE = "optimizer.bin"
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


def _is_ddp(booster) -> bool:
    from colossalai.booster.plugin import TorchDDPPlugin

    return isinstance(booster.plugin, TorchDDPPlugin)


def checkpoint_name(epoch: int, global_step: int) -> str:
    return f"epoch-{epoch}_step-{global_step}"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _tensor_b64(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _b64_tensor(s: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)


def capture_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": repr(random.getstate()), "torch": _tensor_b64(torch.get_rng_state()),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = _tensor_b64(torch.cuda.get_rng_state())
    return state


def restore_rng_state(state: dict) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(_b64_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_b64_tensor(state["cuda"]))


def list_checkpoints(save_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``save_dir``, oldest first (by global step)."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = [(int(m.group(2)), p) for p in save_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_model_config(model, directory: Path) -> None:
    """config.json (dtype and architecture of the weights as saved) and generation_config.json. colossalai writes
    them only when it can import transformers 4's helpers; under transformers 5 it silently writes neither."""
    dtype = next(model.parameters(), torch.empty(0)).dtype
    model.config.architectures = [type(model).__name__]
    setattr(model.config, "dtype" if transformers_5() else "torch_dtype", str(dtype).removeprefix("torch."))
    model.config.save_pretrained(str(directory))
    if model.can_generate():
        model.generation_config.save_pretrained(str(directory))


def save_checkpoint(booster, model, optimizer, lr_scheduler, *, save_dir: str | os.PathLike, epoch: int,
                    global_step: int, running_states: dict, tokenizer, keep_last: int = 0,
                    write_card=None) -> Path:
    """Write a checkpoint collectively (every rank must call it); return its final path. ``write_card(dir)``: rank 0
    puts the model card into ``modeling/``."""
    started = time.perf_counter()
    save_dir = Path(save_dir)
    final = save_dir / checkpoint_name(epoch, global_step)
    tmp = save_dir / f".{final.name}.tmp"
    if _rank() == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    with saving_tied_once(tied_names(model.unwrap()), tmp / "modeling", is_writer=_rank() == 0):
        booster.save_model(model, str(tmp / "modeling"), shard=True, use_safetensors=True)
    if torchao_optimizer(optimizer) is not None:
        if _rank() == 0:
            (tmp / "optimizer").mkdir()
        _barrier()
        save_rank_states(optimizer, tmp / "optimizer")
    elif _is_ddp(booster):
        # DDP optimizer states are replicated: one file. (colossalai 0.5's sharded optimizer loading calls
        # accelerator.synchronize(), which raises on CPU.)
        if _rank() == 0:
            (tmp / "optimizer").mkdir()
        booster.save_optimizer(optimizer, str(tmp / "optimizer" / OPTIMIZER_FILE), shard=False)
    else:
        booster.save_optimizer(optimizer, str(tmp / "optimizer"), shard=True)
        _barrier()  # the optimizer dir exists
        save_master_weights(optimizer, tmp / "optimizer")
    booster.save_lr_scheduler(lr_scheduler, str(tmp / "lr_scheduler"))
    rng_states = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(rng_states, capture_rng_state())
    else:
        rng_states[0] = capture_rng_state()
    if _rank() == 0:
        save_model_config(model.unwrap(), tmp / "modeling")
        save_tokenizer(tokenizer, tmp / "modeling")
        if write_card is not None:
            write_card(tmp / "modeling")
        states = {**running_states, "epoch": epoch, "global_step": global_step, "rng_states": rng_states}
        (tmp / RUNNING_STATES).write_text(json.dumps(states), encoding="utf-8")
    _barrier()  # every rank has finished writing before the directory becomes visible
    if _rank() == 0:
        if final.exists():
            _remove(final)
        os.rename(tmp, final)
        if keep_last > 0:
            for old in list_checkpoints(save_dir)[:-keep_last]:
                _remove(old)
                logger.info("removed old checkpoint %s (--keep_last %d)", old, keep_last)
    _barrier()
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file()) if _rank() == 0 else 0
    # the number to size a scheduler's grace time by (docs/training.md#stopping)
    logger.info("saved checkpoint %s (%.2f GB in %.1f s)", final, size / 1e9, time.perf_counter() - started)
    return final


def _remove(checkpoint: Path) -> None:
    """Delete a checkpoint so that no moment leaves a partly deleted one under a checkpoint's name."""
    doomed = checkpoint.with_name(f".{checkpoint.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.rename(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


LATEST = "latest"


def resolve_load_checkpoint(value: str, save_dir: str | os.PathLike) -> Path:
    """--load_checkpoint: a path, or ``latest`` for the newest complete checkpoint in --save_dir."""
    if value != LATEST:
        return Path(value)
    found = list_checkpoints(save_dir)
    if not found:
        raise UserInputError(f"`latest`: no complete checkpoint (epoch-E_step-S) in --save_dir {save_dir}",
                             where="--load_checkpoint")
    return found[-1]


def checkpoint_kind(path: str | os.PathLike) -> str:
    """'full' for an epoch-E_step-S dir, 'weights' for a modeling/ (HF) dir; UserInputError otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise UserInputError(f"{path} does not exist or is not a directory", where="--load_checkpoint")
    if (path / RUNNING_STATES).is_file() and (path / "modeling").is_dir():
        return "full"
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.index.json"))):
        return "weights"
    raise UserInputError(f"{path} is neither a checkpoint (epoch-E_step-S with {RUNNING_STATES}) nor a modeling/ "
                         f"dir with config.json and safetensors", where="--load_checkpoint")


# What fixes every parameter's shape (and so every optimizer state's): a checkpoint of another model differs here.
SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings", "attention_bias")


def check_same_model(path: str | os.PathLike, config) -> None:
    """Refuse a checkpoint (or modeling/ dir) whose saved config.json describes another model than ``config``,
    naming the first field that differs: resuming it would fail at the first step, or silently for tied weights."""
    path = Path(path)
    saved_path = path / "modeling" / "config.json" if (path / RUNNING_STATES).is_file() else path / "config.json"
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot read {saved_path}: {err}", where="--load_checkpoint") from None
    ours = config.to_dict()
    for field in SHAPE_FIELDS:
        if field in saved and field in ours:  # a field only one transformers version writes: its default
            theirs, mine = saved[field], ours[field]
            if theirs != mine:
                raise UserInputError(f"{path} holds another model: its {field} is {theirs}, --pretrained's is {mine}",
                                     where="--load_checkpoint")


def weights_path(model_dir: str | os.PathLike) -> str:
    """What booster.load_model wants: the sharded index, or the single safetensors file."""
    model_dir = Path(model_dir)
    index = sorted(model_dir.glob("*.safetensors.index.json"))
    if index:
        return str(index[0])
    single = model_dir / "model.safetensors"
    if single.is_file():
        return str(single)
    raise UserInputError(f"{model_dir} holds no model.safetensors or safetensors index (only safetensors weights "
                         f"are loaded)", where="--pretrained")


def load_weights(booster, model, model_dir: str | os.PathLike) -> None:
    """Load a modeling/ (or any safetensors HF) dir into the boosted model; tied names may be absent there."""
    tied = tied_names(model.unwrap())
    # strict unless tied: the tied copy is not in the files (save_pretrained and our saves write it once)
    booster.load_model(model, weights_path(model_dir), strict=not tied)
    check_still_tied(model.unwrap(), tied)


@contextmanager
def weights_only_loads():
    """Every ``torch.load`` inside (colossalai's optimizer and scheduler loads too) runs no code from the file:
    weights_only, as torch >= 2.6 does by default and older ones do when told so."""
    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def load_checkpoint(booster, model, optimizer, lr_scheduler, path: str | os.PathLike) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG; return running_states."""
    with weights_only_loads():
        return _load_checkpoint(booster, model, optimizer, lr_scheduler, Path(path))


def _load_checkpoint(booster, model, optimizer, lr_scheduler, path: Path) -> dict:
    load_weights(booster, model, path / "modeling")
    single = path / "optimizer" / OPTIMIZER_FILE
    if has_rank_states(path / "optimizer"):
        load_rank_states(optimizer, path / "optimizer")
    elif torchao_optimizer(optimizer) is not None:
        raise UserInputError(f"{path} holds fp32 AdamW states; resume it with --optimizer adamw",
                             where="--load_checkpoint")
    else:
        booster.load_optimizer(optimizer, str(single if single.is_file() else path / "optimizer"))
    masters = load_master_weights(optimizer, path / "optimizer")
    if masters.rounded:
        logger.warning("%s: %s", path, masters.message)
    booster.load_lr_scheduler(lr_scheduler, str(path / "lr_scheduler"))
    states = json.loads((path / RUNNING_STATES).read_text(encoding="utf-8"))
    rng = states.get("rng_states") or []
    rank = _rank()
    if rank < len(rng) and rng[rank] is not None:
        restore_rng_state(rng[rank])
    else:
        logger.warning("no RNG state for rank %d in %s (world size changed?): RNG not restored", rank, path)
    return states


@dataclass
class Progress:
    """Where the loop is: saved in running_states.json and restored by ``resume``."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    consumed_samples: int = 0  # over all data-parallel ranks
    last_saved: int = -1       # global step of the newest checkpoint this run wrote or resumed from

    def running_states(self, sampler) -> dict:
        return {"step_in_epoch": self.step_in_epoch, "sampler": sampler.state_dict(),
                "consumed_samples_global": self.consumed_samples}


def resume(path: str | os.PathLike, booster, model, optimizer, lr_scheduler, sampler, *, steps_per_epoch: int,
           samples_per_step: int) -> Progress:
    """--load_checkpoint: restore a full checkpoint (everything) or only weights from a modeling/ dir."""
    if checkpoint_kind(path) != "full":
        load_weights(booster, model, path)
        logger.info("loaded weights only from %s (fresh optimizer and schedule)", path)
        return Progress(last_saved=0)  # nothing to save before the first step
    states = load_checkpoint(booster, model, optimizer, lr_scheduler, path)
    sampler.load_state_dict(states["sampler"])
    progress = Progress(epoch=states["epoch"], step_in_epoch=states["step_in_epoch"],
                        global_step=states["global_step"], last_saved=states["global_step"])
    if progress.step_in_epoch >= steps_per_epoch:  # saved at the end of an epoch
        progress.epoch, progress.step_in_epoch = progress.epoch + 1, 0
    progress.consumed_samples = progress.global_step * samples_per_step
    logger.info("resumed from %s: epoch %d, step %d in epoch, global step %d", path, progress.epoch,
                progress.step_in_epoch, progress.global_step)
    return progress
