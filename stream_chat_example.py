#!/usr/bin/env python
"""Interactive multi-turn chat that streams tokens as they are generated.

    python stream_chat_example.py --model_path save_dir/epoch-0_step-100/modeling --device cpu

Turns are formatted with the tokenizer's chat_template, which prepare_sft_dataset.py stores, so the model
hears the format it was fine-tuned on. One line per user turn; Ctrl-D or Ctrl-C ends the chat.
"""
from colossal_llama2.inference import chat_main as main
from colossal_llama2.utils.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
