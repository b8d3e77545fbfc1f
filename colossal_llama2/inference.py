"""Load a trained model with plain Hugging Face APIs and generate from it (one-shot or streamed chat).

Nothing here is needed to *load* a checkpoint: a ``modeling/`` directory written by train.py is a complete
HF checkpoint. These helpers only choose a sensible dtype per device and keep the two example scripts
short.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, TextIO

from .utils.cli import str2bool
from .utils.errors import UserInputError
from .utils.remote_code import refuse_remote_code
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
        refuse_remote_code(local, "--model_path")
    elif model_path.startswith((".", "/")):
        raise UserInputError(f"{model_path} does not exist", "--model_path")
    dtype = pick_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=dtype, use_safetensors=True,
                                                 low_cpu_mem_usage=True, trust_remote_code=False)
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
        input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=False)
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

    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=False)
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


GENERATE_DOC = 'Stage 5: continue a prompt with a trained model, loaded with plain Hugging Face `from_pretrained`.\n\n    python inference_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu \\\n        --max_new_tokens 64 --input_txt "Colossal-AI is"\n\nPrints only the continuation. Half precision on GPU, float32 on CPU. No trust_remote_code.\n'
CHAT_DOC = "Interactive multi-turn chat that streams tokens as they are generated.\n\n    python stream_chat_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu\n\nTurns are formatted with the tokenizer's chat_template, which prepare_sft_dataset.py stores, so the model\nhears the format it was fine-tuned on. One line per user turn; Ctrl-D or Ctrl-C ends the chat.\n"


def build_generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=GENERATE_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="Hugging Face repo name or local model dir (e.g. a modeling/ dir).")
    p.add_argument("--device", default="cuda:0", help="Device to run on: cuda:0, cpu, ... (default cuda:0).")
    p.add_argument("--max_new_tokens", type=int, default=512, help="Tokens to generate after the prompt.")
    p.add_argument("--do_sample", type=str2bool, default=True, help="Sample (True) or decode greedily (False).")
    p.add_argument("--temperature", type=float, default=0.3, help="Sampling temperature.")
    p.add_argument("--top_k", type=int, default=50, help="Top-k filtering when sampling.")
    p.add_argument("--top_p", type=float, default=0.95, help="Nucleus (top-p) filtering when sampling.")
    p.add_argument("--seed", type=int, default=None, help="Random seed, for reproducible sampling.")
    p.add_argument("--input_txt", required=True, help="The prompt.")
    p.add_argument("--chat", action="store_true",
                   help="Send --input_txt as one user turn in the model's chat template (SFT-trained models).")
    p.add_argument("--system", default=None, help="With --chat: an optional system message before the turn.")
    return p


def generate_main(argv=None) -> int:
    """``inference_example.py``: print the continuation of --input_txt."""
    args = build_generate_parser().parse_args(argv)
    if args.seed is not None:
        import transformers

        transformers.set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_path, args.device)
    gen = generation_kwargs(tokenizer, args.max_new_tokens, args.do_sample, args.temperature, args.top_k, args.top_p)
    print(generate_continuation(model, tokenizer, args.input_txt, chat=args.chat, system=args.system, **gen))
    return 0


def chat_main(argv=None) -> int:
    """``stream_chat_example.py``: an interactive multi-turn chat, streamed."""
    p = argparse.ArgumentParser(description=CHAT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="Hugging Face repo name or local model dir with a chat_template.")
    p.add_argument("--device", default="cuda:0", help="Device to run on: cuda:0, cpu, ...")
    p.add_argument("--system", default=None, help="Optional system message placed before the first turn.")
    p.add_argument("--max_new_tokens", type=int, default=512, help="Maximum tokens per reply.")
    p.add_argument("--do_sample", type=str2bool, default=True, help="Sample (True) or decode greedily (False).")
    p.add_argument("--temperature", type=float, default=0.3, help="Sampling temperature.")
    p.add_argument("--top_k", type=int, default=50, help="Top-k filtering when sampling.")
    p.add_argument("--top_p", type=float, default=0.95, help="Nucleus (top-p) filtering when sampling.")
    args = p.parse_args(argv)
    model, tokenizer = load_model_and_tokenizer(args.model_path, args.device)
    gen = generation_kwargs(tokenizer, args.max_new_tokens, args.do_sample, args.temperature, args.top_k, args.top_p)
    try:
        chat_loop(model, tokenizer, sys.stdin, sys.stdout, system=args.system, **gen)
    except KeyboardInterrupt:
        print()
    return 0
