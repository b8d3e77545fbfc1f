"""``--plugin auto``: the fastest plugin whose estimated peak GPU memory fits the GPUs at hand.

Speed order, from measurements with benchmarks/train_benchmark.py: ddp (1b on one H100: 47.0k tokens/s against
zero2's 37.3k before zero2's faster step) > zero2 (7b on two H200: 1.4x gemini) > gemini > zero2_cpu >
gemini_auto. 3d is never picked: it needs a ``--tp`` choice and is the slowest at tp 1.

Peak memory per GPU, in bytes, for P parameters on N data-parallel GPUs (no tensor parallelism):

    ddp          16 P          fp32 weights, fp32 gradients, AdamW's two fp32 states, all replicated
    zero2        2 P + 14 P/N  bf16 weights replicated; bf16 gradient, fp32 master weight and Adam states sharded
    gemini       16 P/N        everything sharded in chunks
    zero2_cpu    2 P + 2 P/N   optimizer states and master weights in host memory
    gemini_auto  2 P/N         offloads the rest as needed

plus activations (no gradient checkpointing: ~40 bytes per token, layer and hidden unit; with it, ~4) and
3 GB for the CUDA context and workspaces. Calibrated against measured peaks (tests/test_plugin_choice.py,
within -5% and +25% of each):
zero2 at 2.2 B parameters on one H200 (40.8 GiB measured, 43.3 GB estimated; 33.7 GiB with the fused step) and
at 7 B on two (73.4 GiB, 87.9 GB), with the fused step at 3.8 B on one H200 (58.9 GiB, 74.6 GB; micro-batch 2:
69.0 GiB, 85.3 GB), ddp at 1.1 B on one H100 (23.7 GiB, 25.6 GB), gemini at 2.2 B on one H200 (35.9 GiB,
43.3 GB).
Most estimates err on the high side; a plugin is chosen only if its estimate is below 90% of the smallest
GPU's memory.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
FIXED_OVERHEAD = 3 * GB
HEADROOM = 0.9
ACTIVATION_BYTES = {False: 40, True: 4}  # per token, layer and hidden unit; key: gradient checkpointing
AUTO_ORDER = ("ddp", "zero2", "gemini", "zero2_cpu", "gemini_auto")


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int

    @classmethod
    def of(cls, config) -> "ModelShape":
        """Parameter count of a transformers LLaMA config, without building the model."""
        h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        kv = h * kv_heads // config.num_attention_heads
        embeddings = v * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
        return cls(params=embeddings + layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h,
                   layers=layers, hidden=h)


def estimate_peak_bytes(plugin: str, shape: ModelShape, *, gpus: int, tokens_per_micro_batch: int,
                        grad_checkpoint: bool = False) -> float:
    """Estimated peak device memory of one GPU (see the table in the module docstring)."""
    p, n = shape.params, gpus
    states = {"ddp": 16 * p, "zero2": 2 * p + 14 * p / n, "gemini": 16 * p / n, "zero2_cpu": 2 * p + 2 * p / n,
              "gemini_auto": 2 * p / n}[plugin]
    activations = ACTIVATION_BYTES[grad_checkpoint] * tokens_per_micro_batch * shape.layers * shape.hidden
    return states + activations + FIXED_OVERHEAD


def choose_plugin(shape: ModelShape, *, cuda: bool, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
                  grad_checkpoint: bool = False) -> tuple[str, str]:
    """(plugin, why): the first of AUTO_ORDER whose estimate fits; on CPU, ddp."""
    if not cuda:
        return "ddp", "no CUDA GPU: ddp is the plugin that runs on CPU"
    budget = HEADROOM * device_bytes
    rejected = []
    for plugin in AUTO_ORDER:
        need = estimate_peak_bytes(plugin, shape, gpus=gpus, tokens_per_micro_batch=tokens_per_micro_batch,
                                   grad_checkpoint=grad_checkpoint)
        if need <= budget:
            why = (f"estimated peak {need / GB:.1f} GB per GPU fits {HEADROOM:.0%} of {device_bytes / GB:.1f} GB"
                   + (f"; faster plugins would need {', '.join(rejected)}" if rejected else ""))
            return plugin, why
        rejected.append(f"{plugin} {need / GB:.1f} GB")
    return "gemini_auto", f"nothing fits by the estimate ({', '.join(rejected)}); gemini_auto offloads what it must"
