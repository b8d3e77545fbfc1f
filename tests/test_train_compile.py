"""--compile: every decoder layer runs compiled, however deep the model.

torch.compile recompiles a function at most ``recompile_limit`` (8) times and then runs it eagerly. With
transformers' KV cache on during training, each decoder layer's forward reads its own layer index, so each
layer was a recompilation and layers 9 and deeper ran in eager mode (7b has 32): at 16 layers fp8 fell from
1.15x to 0.71x of bf16. The compiler backend here counts the compiled graphs and their
calls; dynamo's tracing, guards and recompile limit are the same as with inductor, without a C++ build.
"""
from __future__ import annotations

import torch
import torch._dynamo
from transformers import LlamaConfig, LlamaForCausalLM

from colossal_llama2.dataset.loader import PaddingCollator
from colossal_llama2.training.kernels.fused_ops import Fusion
from colossal_llama2.training.model_setup import ModelPatches, apply_patches_after_boost
from colossal_llama2.training.token_loss import TokenLoss


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is and counts graphs and graph calls."""

    def __init__(self):
        self.graphs = 0
        self.calls = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1

        def run(*args):
            self.calls += 1
            return graph_module.forward(*args)
        return run


def test_compile_runs_every_layer_compiled_past_the_recompile_limit(monkeypatch):
    layers = torch._dynamo.config.recompile_limit + 4
    config = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=256, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    backend = CountingBackend()
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend=backend))
    patches = ModelPatches(attn_implementation="sdpa", isolate_documents=True,
                           fusion=Fusion(norm=False, loss=False, compile_loss=False), compile_layers=True,
                           fp8="off", grad_checkpoint=False, freeze_non_embeddings=False, neftune_alpha=None,
                           bf16_autocast=False, bf16_residual_stream=False, lazy_init=False)
    torch._dynamo.reset()
    apply_patches_after_boost(model, patches)
    token_loss = TokenLoss(model, patches, device=torch.device("cpu"), mask_dtype=torch.float32,
                           model_computes_loss=False, neftune=None)
    collate = PaddingCollator(pad_token_id=0, max_length=24, padding_mode="longest")
    ids = torch.randint(3, 256, (20,), generator=torch.Generator().manual_seed(0)).tolist()
    batch = collate([{"input_ids": ids, "labels": ids, "seq_lengths": [8, 12]}])  # two packed documents

    loss, n_tokens = token_loss(batch)
    loss.backward()

    assert backend.calls == layers, f"{layers - backend.calls} of {layers} decoder layers ran in eager mode"
    assert backend.graphs == 1, "the layers should share one compiled graph, not one compilation each"
    assert n_tokens == 19 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.model.layers[-1].parameters())
    torch._dynamo.reset()


def test_compile_watch_says_once_when_dynamo_gives_up(monkeypatch):
    """With the KV cache on (the old defect), layers past the recompile limit run eagerly: the run says so."""
    from torch._dynamo.utils import counters

    from colossal_llama2.training.kernels import compile_watch

    said = []
    monkeypatch.setattr(compile_watch.logger, "warning", lambda *args: said.append(args))
    layers = torch._dynamo.config.recompile_limit + 2
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=64))
    backend = CountingBackend()
    for layer in model.model.layers:
        layer.compile(backend=backend)
    torch._dynamo.reset()
    counters.clear()
    watch = compile_watch.CompileWatch(enabled=True)
    watch.after_step(1)
    assert said == []
    model(input_ids=torch.randint(0, 64, (1, 8)), use_cache=True)  # each layer reads its own index
    assert backend.calls == torch._dynamo.config.recompile_limit  # the rest ran eagerly
    watch.after_step(2)
    watch.after_step(3)
    assert len(said) == 1 and said[0][-1] == 2 and said[0][-2] >= 1
    counters.clear()
    torch._dynamo.reset()
