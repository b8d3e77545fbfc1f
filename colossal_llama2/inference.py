"""Load a trained model with plain Hugging Face APIs and generate from it (one-shot or streamed chat).

Nothing here is needed to *load* a checkpoint: a ``modeling/`` directory written by train.py is a complete
HF checkpoint. These helpers only choose a sensible dtype per device and keep the two example scripts
short.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterable, TextIO

from .utils.errors import UserInputError
from .utils.logging import get_logger

logger = get_logger(__name__)


def pick_dtype(device: str):
    """Half precision on GPU (bf16 where supported, else fp16), float32 on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model_and_tokenizer(model_path: str, device: str):
    """Load ``model_path`` (local dir or hub name) with safetensors weights onto ``device``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"{device} requested but no CUDA device is available (use --device cpu)", "--device")
    local = Path(model_path)
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserInputError(f"{local} has no config.json: not a Hugging Face model directory", "--model_path")
        if not any(local.glob("*.safetensors")):
            raise UserInputError(f"{local} holds no *.safetensors weights", "--model_path")
    elif model_path.startswith((".", "/")):
        raise UserInputError(f"{model_path} does not exist", "--model_path")
    dtype = pick_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=dtype, use_safetensors=True,
                                                 low_cpu_mem_usage=True)
    model.to(device).eval()
    logger.info("loaded %s on %s in %s (%d parameters)", model_path, device, dtype, model.num_parameters())
    return model, tokenizer


def generation_kwargs(tokenizer, max_new_tokens: int, do_sample: bool, temperature: float, top_k: int,
                      top_p: float) -> dict:
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    if do_sample:  # passing sampling knobs with greedy decoding only produces warnings
        kwargs.update(temperature=temperature, top_k=top_k, top_p=top_p)
    return kwargs


def require_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise UserInputError("the tokenizer has no chat_template; models trained on prepare_sft_dataset.py data "
                             "carry it in their modeling/ dir (or prepare SFT data with --install_chat_template)",
                             "--model_path")


def generate_continuation(model, tokenizer, prompt: str, chat: bool = False, system: str | None = None,
                          **gen_kwargs) -> str:
    """Return only the text generated after ``prompt`` (special tokens removed).

    With ``chat`` the prompt is one user turn rendered by the tokenizer's chat template (after an optional
    system turn), ending with the assistant's cue: the format SFT taught the model.
    """
    import torch

    if chat:
        require_chat_template(tokenizer)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    else:
        input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    input_ids = input_ids.to(model.device)
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **gen_kwargs)
    return tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)


def stream_reply(model, tokenizer, messages: list[dict], write: Callable[[str], None], **gen_kwargs) -> str:
    """Generate the assistant's next turn for ``messages``, calling ``write`` with each new piece of text."""
    import torch
    from transformers import TextIteratorStreamer

    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    prompt_ids = prompt_ids.to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    def run():
        with torch.no_grad():
            model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids), streamer=streamer,
                           **gen_kwargs)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    pieces = []
    for text in streamer:
        pieces.append(text)
        write(text)
    worker.join()
    return "".join(pieces)


def chat_loop(model, tokenizer, lines: Iterable[str], out: TextIO, system: str | None = None,
              **gen_kwargs) -> int:
    """Multi-turn chat: one user turn per input line; returns the number of turns answered.

    The turns are formatted by the tokenizer's ``chat_template``, the one data preparation wrote, so the
    model is spoken to in the format it was fine-tuned on.
    """
    require_chat_template(tokenizer)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    turns = 0
    out.write(">>> ")
    out.flush()
    for line in lines:
        user = line.rstrip("\n")
        if not user.strip():
            out.write(">>> ")
            out.flush()
            continue
        messages.append({"role": "user", "content": user})

        def write(text: str) -> None:
            out.write(text)
            out.flush()

        reply = stream_reply(model, tokenizer, messages, write, **gen_kwargs)
        messages.append({"role": "assistant", "content": reply})
        turns += 1
        out.write("\n>>> ")
        out.flush()
    out.write("\n")
    return turns
