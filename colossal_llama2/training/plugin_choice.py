"""``--plugin auto`` and ``python -m colossal_llama2.plan``: each plugin's peak GPU memory, from config.json alone.

Speed order, from measurements with benchmarks/train_benchmark.py: zero2 (1.12-1.23x the strongest FSDP2 peer,
3x gemini at 16 of 7b's layers on one H200) > gemini > zero2_cpu > gemini_auto (offload: two orders of
magnitude slower than zero2 at 7b). ddp is picked on CPU only: on GPUs it needs more memory than zero2 (fp32
weights and gradients replicated) and has not been measured faster than zero2's fused step. 3d is never
picked: it needs a ``--tp`` choice and is the slowest at tp 1.

Peak memory per GPU, for P parameters on N data-parallel GPUs (no tensor parallelism), T tokens per
micro-batch, L layers, hidden size H, vocabulary V:

    zero2        max(forward end:  2 P + 12 P/N + activations,       bf16 weights; fp32 master and Adam states
                     backward end: 2 P + 14 P/N + checkpoints)       sharded; the bf16 gradients exist only after
    ddp          16 P + activations                                  fp32 weights, gradients, AdamW states
    gemini       16 P/N + activations                                everything sharded in chunks
    zero2_cpu    2 P + 2 P/N + activations                           states and master weights in host memory
    gemini_auto  2 P/N + activations                                 offloads the rest as needed

activations = 40 bytes per token, layer and hidden unit without gradient checkpointing; with it, 4 bytes
(the layers' inputs) plus one layer's 40; plus V·T bf16 logits and 1.5 GB of CUDA context and workspaces.
Calibrated against the peaks measured on one H200 with train.py's defaults (tests/test_plugin_choice.py keeps
them as a table; every estimate within -5% / +10%): zero2 at LLaMA-2-7B's shape 109.1 GiB (estimate +4%), at
16 of its layers 58.9 / 69.0 GiB (micro-batch 1 / 2), LLaMA-3-8B and Qwen2-7B with checkpointing 120.7 and
115.0 GiB (+1%), gemini at 8 and 16 of 7b's layers 35.9 and 62.8 GiB (+8%).

The choice: the fastest plugin whose estimate fits the smallest GPU. Estimates run up to 10% high, so a plugin
that runs on the GPU and is within that margin of the GPU's memory is still chosen, with a warning and the flags
to try if the first step runs out of memory, before any offload plugin (which would be ~70x slower).
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
FIXED_OVERHEAD = 1.5 * GB
COMFORTABLE = 0.92  # an estimate below this share of the GPU's memory fits without doubt
ESTIMATE_MARGIN = 0.10  # estimates run up to this much above the measured peaks
ACTIVATION_BYTES = {False: 40, True: 4}  # per token, layer and hidden unit; key: gradient checkpointing
LAYER_BYTES = 40  # one layer's activations while checkpointing recomputes it
AUTO_ORDER = ("zero2", "gemini", "zero2_cpu", "gemini_auto")
IN_GPU = ("zero2", "gemini")
PLANNED = ("ddp", *AUTO_ORDER)  # what the planner lists
SPEED_CLASS = {"ddp": "CPU runs; on GPUs zero2 needs less memory", "zero2": "fast (1.1-1.2x FSDP2 + compile)",
               "gemini": "about a third of zero2", "zero2_cpu": "offload: host-bound, ~1-2% of zero2",
               "gemini_auto": "offload: slowest"}


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    vocab: int = 0

    @classmethod
    def of(cls, config) -> "ModelShape":
        """Parameter count of a transformers LLaMA/Qwen2/Mistral config, without building the model."""
        h, i, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        kv = h * kv_heads // config.num_attention_heads
        embeddings = v * h * (1 if getattr(config, "tie_word_embeddings", False) else 2)
        qkv_bias = h + 2 * kv if getattr(config, "model_type", "") == "qwen2" else 0
        return cls(params=embeddings + layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h + qkv_bias) + h,
                   layers=layers, hidden=h, vocab=v)


def activation_bytes(shape: ModelShape, tokens: int, grad_checkpoint: bool) -> float:
    layers = ACTIVATION_BYTES[grad_checkpoint] * tokens * shape.layers * shape.hidden
    recompute = LAYER_BYTES * tokens * shape.hidden if grad_checkpoint else 0
    return layers + recompute + 2 * shape.vocab * tokens


def estimate_peak_bytes(plugin: str, shape: ModelShape, *, gpus: int, tokens_per_micro_batch: int,
                        grad_checkpoint: bool = False) -> float:
    """Estimated peak device memory of one GPU (see the table in the module docstring)."""
    p, n = shape.params, gpus
    activations = activation_bytes(shape, tokens_per_micro_batch, grad_checkpoint)
    if plugin == "zero2":
        logits = 2 * shape.vocab * tokens_per_micro_batch
        checkpoints = activations - logits if grad_checkpoint else 0
        peak = max(2 * p + 12 * p / n + activations, 2 * p + 14 * p / n + checkpoints + logits)
        return peak + FIXED_OVERHEAD
    states = {"ddp": 16 * p, "gemini": 16 * p / n, "zero2_cpu": 2 * p + 2 * p / n, "gemini_auto": 2 * p / n}[plugin]
    return states + activations + FIXED_OVERHEAD


def oom_hint(plugin: str, grad_checkpoint: bool, micro_batch_size: int) -> str:
    """What to try when a run chosen near the memory limit runs out of memory."""
    tries = [] if grad_checkpoint else ["--use_grad_checkpoint"]
    if micro_batch_size > 1:
        tries.append(f"--micro_batch_size {micro_batch_size // 2} with --accumulation_steps doubled")
    tries.append("more GPUs (zero2 shards the optimizer states over them)" if plugin == "zero2" else "--plugin gemini")
    return "try " + ", or ".join(tries)


def choose_plugin(shape: ModelShape, *, cuda: bool, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
                  grad_checkpoint: bool = False) -> tuple[str, str]:
    """(plugin, why): the first of AUTO_ORDER whose estimate fits (see the module docstring); on CPU, ddp."""
    if not cuda:
        return "ddp", "no CUDA GPU: ddp is the plugin that runs on CPU"
    needs = {plugin: estimate_peak_bytes(plugin, shape, gpus=gpus, tokens_per_micro_batch=tokens_per_micro_batch,
                                         grad_checkpoint=grad_checkpoint) for plugin in AUTO_ORDER}
    rejected = []
    for plugin in IN_GPU:
        if needs[plugin] <= COMFORTABLE * device_bytes:
            why = f"estimated peak {needs[plugin] / GB:.1f} GB per GPU fits {device_bytes / GB:.1f} GB"
            return plugin, why + (f"; faster plugins would need {', '.join(rejected)}" if rejected else "")
        rejected.append(f"{plugin} {needs[plugin] / GB:.1f} GB")
    for plugin in IN_GPU:  # nothing fits without doubt: the fastest one within the estimate's error margin
        if needs[plugin] * (1 - ESTIMATE_MARGIN) <= device_bytes:
            return plugin, (f"estimated peak {needs[plugin] / GB:.1f} GB per GPU is within the estimate's "
                            f"{ESTIMATE_MARGIN:.0%} margin of {device_bytes / GB:.1f} GB (estimates run high; an "
                            f"offload plugin would be far slower); if the first step runs out of memory, "
                            f"{oom_hint(plugin, grad_checkpoint, 1)}")
    for plugin in AUTO_ORDER[len(IN_GPU):]:
        if needs[plugin] <= COMFORTABLE * device_bytes:
            return plugin, (f"estimated peak {needs[plugin] / GB:.1f} GB per GPU fits {device_bytes / GB:.1f} GB; "
                            f"the in-GPU plugins would need {', '.join(rejected)}")
        rejected.append(f"{plugin} {needs[plugin] / GB:.1f} GB")
    return "gemini_auto", f"nothing fits by the estimate ({', '.join(rejected)}); gemini_auto offloads what it must"


def plan_table(shape: ModelShape, *, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
               grad_checkpoint: bool) -> list[str]:
    """The planner's lines: every plugin's estimate and speed class, then the choice on the last line."""
    lines = [f"model: {shape.params / 1e9:.2f} B parameters, {shape.layers} layers, hidden {shape.hidden}, vocab "
             f"{shape.vocab}; {gpus} GPU(s) of {device_bytes / GB:.1f} GB; {tokens_per_micro_batch} tokens per "
             f"micro-batch; gradient checkpointing {'on' if grad_checkpoint else 'off'}",
             f"{'plugin':<12} {'peak GB/GPU':>11}  {'fits':<6} speed"]
    for plugin in PLANNED:
        need = estimate_peak_bytes(plugin, shape, gpus=gpus, tokens_per_micro_batch=tokens_per_micro_batch,
                                   grad_checkpoint=grad_checkpoint)
        fits = "yes" if need <= COMFORTABLE * device_bytes else (
            "edge" if need * (1 - ESTIMATE_MARGIN) <= device_bytes else "no")
        lines.append(f"{plugin:<12} {need / GB:>11.1f}  {fits:<6} {SPEED_CLASS[plugin]}")
    plugin, why = choose_plugin(shape, cuda=True, gpus=gpus, device_bytes=device_bytes,
                                tokens_per_micro_batch=tokens_per_micro_batch, grad_checkpoint=grad_checkpoint)
    lines.append(f"--plugin auto would pick: {plugin} ({why})")
    return lines
