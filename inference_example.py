#!/usr/bin/env python
"""Stage 5: continue a prompt with a trained model, loaded with plain Hugging Face `from_pretrained`.

    python inference_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu \
        --max_new_tokens 64 --input_txt "Colossal-AI is"

Prints only the continuation. Half precision on GPU, float32 on CPU. No trust_remote_code.
"""
import argparse

from colossal_llama2.inference import generate_continuation, generation_kwargs, load_model_and_tokenizer
from colossal_llama2.utils.cli import str2bool
from colossal_llama2.utils.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seed is not None:
        import transformers

        transformers.set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model_path, args.device)
    gen = generation_kwargs(tokenizer, args.max_new_tokens, args.do_sample, args.temperature, args.top_k, args.top_p)
    print(generate_continuation(model, tokenizer, args.input_txt, chat=args.chat, system=args.system, **gen))
    return 0


if __name__ == "__main__":
    run_cli(main)
