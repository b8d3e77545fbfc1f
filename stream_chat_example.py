#!/usr/bin/env python
"""Interactive multi-turn chat that streams tokens as they are generated.

    python stream_chat_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu

Turns are formatted with the tokenizer's chat_template, which prepare_sft_dataset.py stores, so the model
hears the format it was fine-tuned on. One line per user turn; Ctrl-D or Ctrl-C ends the chat.
"""
import argparse
import sys

from colossal_llama2.inference import chat_loop, generation_kwargs, load_model_and_tokenizer
from colossal_llama2.utils.cli import str2bool
from colossal_llama2.utils.errors import run_cli


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    run_cli(main)
