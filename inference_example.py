#!/usr/bin/env python
"""Stage 5: continue a prompt with a trained model, loaded with plain Hugging Face `from_pretrained`.

    python inference_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu \
        --max_new_tokens 64 --input_txt "Colossal-AI is"

Prints only the continuation. Half precision on GPU, float32 on CPU. No trust_remote_code.
"""
from colossal_llama2.inference import build_generate_parser as build_parser, generate_main as main
from colossal_llama2.utils.errors import run_cli

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_cli(main)
