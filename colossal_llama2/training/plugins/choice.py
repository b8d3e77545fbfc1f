"""``--plugin auto`` and ``python -m colossal_llama2.plan``: each plugin's peak GPU memory, from config.json alone.

Speed order, from measurements with benchmarks/train_benchmark.py: zero2 (1.12-1.23x the strongest FSDP2 peer,
1.8x gemini at 16 of 7b's layers on one H200) > gemini > zero2_cpu (bound by the host's Adam: 0.17x zero2 at
7b on one H200, micro-batch 1) > gemini_auto (offload: two orders of magnitude slower than zero2 at 7b). ddp is
picked on CPU only: on GPUs it needs more memory than zero2 (fp32 weights and gradients replicated) and has
not been measured faster than zero2's fused step. 3d is never picked: it needs a ``--tp`` choice and is the
slowest at tp 1.

Peak memory per GPU, for P parameters on N data-parallel GPUs (no tensor parallelism), T tokens per
micro-batch, L layers, hidden size H, vocabulary V:

    zero2        max(forward end:  2 P + 12 P/N + activations,       bf16 weights; fp32 master and Adam states
                     backward end: 2 P + 14 P/N + checkpoints)       sharded; the bf16 gradients exist only after
    ddp          16 P + activations                                  fp32 weights, gradients, AdamW states
    gemini       16 P/N + activations                                everything sharded in chunks
    zero2_cpu    max(2 P + activations,                              master weights and Adam states in host
                     2 P + 2 P/N + checkpoints)                      memory
    gemini_auto  2 P/N + activations                                 offloads the rest as needed

With ``--optimizer adamw_bf16`` / ``adamw8bit`` (zero2 or ddp only) zero2 keeps no fp32 master weights: its
12 P/N of master weights and states become 4 P/N (bf16 states) or 2 P/N (8-bit states); see training/optim.py.

activations = 37 bytes per token, layer and hidden unit without gradient checkpointing; with it, 4 bytes
(the layers' inputs) plus one layer's 40; plus V·T bf16 logits and 1.5 GB of CUDA context and workspaces.
Calibrated against the peaks measured on one H200 with train.py's defaults (tests/test_plugin_choice.py keeps
them as a table; every estimate within -5% to +9%): zero2 at LLaMA-2-7B's shape 109.1 GiB (estimate +3%), at
16 of its layers 58.9 / 69.0 GiB (micro-batch 1 / 2), LLaMA-3-8B and Qwen2-7B with checkpointing 120.7 and
115.0 GiB (+3%), LLaMA-3-8B without it 123.8 GiB (fp32 AdamW), 64.0 (adamw_bf16) and 49.3 (adamw8bit) (+1-3%),
gemini at 8 and 16 of 7b's layers 35.9 and 62.8 GiB (+8-9%), zero2_cpu at 7b 30.9 GiB (+9%).

The choice: the fastest plugin whose estimate fits the smallest GPU. Estimates run up to 10% high, so a plugin
that runs on the GPU and is within that margin of the GPU's memory is still chosen, with a warning and the flags
to try if the first step runs out of memory, before any offload plugin (which would be ~70x slower).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...utils.errors import UserInputError
GB = 1e9
# Bytes per parameter of master weights and optimizer states for each --optimizer (what zero2 shards over its
# ranks); training/optim.py says how each keeps them.
STATE_BYTES = {"adamw": 12, "adamw_bf16": 4, "adamw8bit": 2}
FIXED_OVERHEAD = 1.5 * GB
COMFORTABLE = 0.92  # an estimate below this share of the GPU's memory fits without doubt
ESTIMATE_MARGIN = 0.10  # estimates run up to this much above the measured peaks
ACTIVATION_BYTES = {False: 37, True: 4}  # per token, layer and hidden unit; key: gradient checkpointing
LAYER_BYTES = 40  # one layer's activations while checkpointing recomputes it
AUTO_ORDER = ("zero2", "gemini", "zero2_cpu", "gemini_auto")
IN_GPU = ("zero2", "gemini")
PLANNED = ("ddp", *AUTO_ORDER)  # what the planner lists
SPEED_CLASS = {"ddp": "CPU runs; on GPUs zero2 needs less memory", "zero2": "fast (1.1-1.2x FSDP2 + compile)",
               "gemini": "about half of zero2 (0.55x)",
               "zero2_cpu": "offload: bound by the host's Adam, 0.17x zero2 at 7b", "gemini_auto": "offload: slowest"}
LOW_MEMORY_SPEED = {"adamw_bf16": "zero2 speed class; bf16 weights with stochastic rounding",
                    "adamw8bit": "zero2 speed class; 8-bit states, bf16 weights with stochastic rounding"}
FP8_SPEED = ("1.19x zero2 at micro-batch 1, 1.29x at 2, loss within 1% over 200 steps (16 of LLaMA-2-7B's layers, "
             "one H200, with --compile --fused_ops on)")


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    vocab: int = 0

    @classmethod
    def of(cls, config) -> "ModelShape":
        """The shape of a transformers config: the parameter count of its causal LM built on the meta device (no
        memory, about a second at 70 B), so exact for every family the installed transformers knows (q/k norms,
        biases, extra norms, NoPE layers; tied embeddings counted once)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        text = config.get_text_config()
        return cls(params=sum(p.numel() for p in model.parameters()), layers=text.num_hidden_layers,
                   hidden=text.hidden_size, vocab=text.vocab_size)


def activation_bytes(shape: ModelShape, tokens: int, grad_checkpoint: bool) -> float:
    layers = ACTIVATION_BYTES[grad_checkpoint] * tokens * shape.layers * shape.hidden
    recompute = LAYER_BYTES * tokens * shape.hidden if grad_checkpoint else 0
    return layers + recompute + 2 * shape.vocab * tokens


def estimate_peak_bytes(plugin: str, shape: ModelShape, *, gpus: int, tokens_per_micro_batch: int,
                        grad_checkpoint: bool = False, optimizer: str = "adamw") -> float:
    """Estimated peak device memory of one GPU (see the table in the module docstring)."""
    p, n = shape.params, gpus
    activations = activation_bytes(shape, tokens_per_micro_batch, grad_checkpoint)
    state = STATE_BYTES[optimizer]
    if plugin in ("zero2", "zero2_cpu"):
        logits = 2 * shape.vocab * tokens_per_micro_batch
        checkpoints = activations - logits if grad_checkpoint else 0
        on_gpu = 0 if plugin == "zero2_cpu" else state  # zero2_cpu keeps master weights and states on the host
        peak = max(2 * p + on_gpu * p / n + activations, 2 * p + (on_gpu + 2) * p / n + checkpoints + logits)
        return peak + FIXED_OVERHEAD
    if plugin == "ddp" and optimizer != "adamw":  # fp32 weights and gradients, the states as the optimizer keeps them
        return 8 * p + state * p + activations + FIXED_OVERHEAD
    states = {"ddp": 16 * p, "gemini": 16 * p / n, "gemini_auto": 2 * p / n}[plugin]
    return states + activations + FIXED_OVERHEAD


def oom_hint(plugin: str, grad_checkpoint: bool, micro_batch_size: int) -> str:
    """What to try when a run chosen near the memory limit runs out of memory."""
    tries = [] if grad_checkpoint else ["--use_grad_checkpoint"]
    if micro_batch_size > 1:
        tries.append(f"--micro_batch_size {micro_batch_size // 2} with --accumulation_steps doubled")
    tries.append("more GPUs (zero2 shards the optimizer states over them)" if plugin == "zero2" else "--plugin gemini")
    return "try " + ", or ".join(tries)


def choose_plugin(shape: ModelShape, *, cuda: bool, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
                  grad_checkpoint: bool = False, optimizer: str = "adamw") -> tuple[str, str]:
    """(plugin, why): the first of AUTO_ORDER whose estimate fits (see the module docstring); on CPU, ddp."""
    if not cuda:
        return "ddp", "no CUDA GPU: ddp is the plugin that runs on CPU"
    if optimizer != "adamw":
        return _choose_for_low_memory_optimizer(shape, gpus, device_bytes, tokens_per_micro_batch, grad_checkpoint,
                                                optimizer)
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


def gemini_warning(shape: ModelShape, *, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
                   grad_checkpoint: bool) -> str | None:
    """The warning for an explicit ``--plugin gemini`` where zero2 fits: colossalai's Gemini spends much of each
    step in per-parameter Python hooks (docs/benchmarks.md has the profile)."""
    need = estimate_peak_bytes("zero2", shape, gpus=gpus, tokens_per_micro_batch=tokens_per_micro_batch,
                               grad_checkpoint=grad_checkpoint)
    if need > COMFORTABLE * device_bytes:
        return None
    return (f"--plugin gemini trains at about half of zero2's speed (0.55x at 16 of LLaMA-2-7B's layers on one H200: "
            f"colossalai's per-parameter chunk hooks keep the GPU waiting), and zero2 fits here (estimated "
            f"{need / GB:.1f} GB per GPU of {device_bytes / GB:.1f}): --plugin zero2 or auto is faster")


def _choose_for_low_memory_optimizer(shape: ModelShape, gpus: int, device_bytes: float, tokens: int,
                                     grad_checkpoint: bool, optimizer: str) -> tuple[str, str]:
    """zero2, the one GPU plugin the low-memory optimizers run with, if it fits by the estimate (or its margin)."""
    need = estimate_peak_bytes("zero2", shape, gpus=gpus, tokens_per_micro_batch=tokens,
                               grad_checkpoint=grad_checkpoint, optimizer=optimizer)
    if need <= COMFORTABLE * device_bytes:
        return "zero2", f"--optimizer {optimizer}: estimated peak {need / GB:.1f} GB per GPU fits {device_bytes / GB:.1f} GB"
    if need * (1 - ESTIMATE_MARGIN) <= device_bytes:
        return "zero2", (f"--optimizer {optimizer}: estimated peak {need / GB:.1f} GB per GPU is within the estimate's "
                         f"{ESTIMATE_MARGIN:.0%} margin of {device_bytes / GB:.1f} GB; if the first step runs out of "
                         f"memory, {oom_hint('zero2', grad_checkpoint, 1)}")
    raise UserInputError(f"with --optimizer {optimizer} only zero2 (or ddp) runs, and its estimated peak "
                         f"{need / GB:.1f} GB per GPU does not fit {device_bytes / GB:.1f} GB; "
                         f"{oom_hint('zero2', grad_checkpoint, 1)}", where="--plugin auto")


def plan_table(shape: ModelShape, *, gpus: int, device_bytes: float, tokens_per_micro_batch: int,
               grad_checkpoint: bool, optimizer: str = "adamw") -> list[str]:
    """The planner's lines: every plugin's estimate and speed class (zero2 also with each low-memory optimizer),
    then the choice for ``optimizer`` on the last line."""
    lines = [f"model: {shape.params / 1e9:.2f} B parameters, {shape.layers} layers, hidden {shape.hidden}, vocab "
             f"{shape.vocab}; {gpus} GPU(s) of {device_bytes / GB:.1f} GB; {tokens_per_micro_batch} tokens per "
             f"micro-batch; gradient checkpointing {'on' if grad_checkpoint else 'off'}",
             f"{'plugin':<12} {'--optimizer':<11} {'peak GB/GPU':>11}  {'fits':<6} speed"]
    rows = [(plugin, "adamw") for plugin in PLANNED] + [("zero2", kind) for kind in STATE_BYTES if kind != "adamw"]
    for plugin, kind in rows:
        need = estimate_peak_bytes(plugin, shape, gpus=gpus, tokens_per_micro_batch=tokens_per_micro_batch,
                                   grad_checkpoint=grad_checkpoint, optimizer=kind)
        fits = "yes" if need <= COMFORTABLE * device_bytes else (
            "edge" if need * (1 - ESTIMATE_MARGIN) <= device_bytes else "no")
        speed = SPEED_CLASS[plugin] if kind == "adamw" else LOW_MEMORY_SPEED[kind]
        lines.append(f"{plugin:<12} {kind:<11} {need / GB:>11.1f}  {fits:<6} {speed}")
    lines.append(f"zero2 and zero2_cpu also take --fp8 tensorwise (same memory): {FP8_SPEED}")
    try:
        plugin, why = choose_plugin(shape, cuda=True, gpus=gpus, device_bytes=device_bytes,
                                    tokens_per_micro_batch=tokens_per_micro_batch, grad_checkpoint=grad_checkpoint,
                                    optimizer=optimizer)
        lines.append(f"--plugin auto would pick: {plugin} ({why})")
    except UserInputError as refused:
        lines.append(f"--plugin auto would refuse: {refused}")
    return lines
