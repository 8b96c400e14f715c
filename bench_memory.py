"""Memory benchmarks: what one update and one policy load hold, against a baseline
measured in the same run. Sections of bench.py (`python bench.py --only memory,vocab,load`).

    memory  peak memory of one update micro-batch, 512..8192 response tokens, V = 152,064:
            the full-logit path vs the chunked loss head (loss.ScoredHead); the growth per
            1K tokens next to the size of 1K tokens of bf16 logits (the naive cost).
    vocab   train.py for one step on 2 ranks at the 7B's vocabulary and a small body:
            peak RSS of a rank at 8,192-token responses vs 512.
    load    peak host RSS per rank while building the FSDP2 policy: every rank loading vs
            rank 0 loading + broadcast (policy.build_policy).

Peak memory is measured in a fresh process per variant, as the growth of the peak
resident set (VmHWM of /proc/self/status: this process's own high-water mark; ru_maxrss
would start from the parent's peak at fork) over a state where everything but the
measured work already exists. measure_update_peak is also what tests/test_memory.py
checks memory_plan.py against.

Imports (inside the child processes): policy.py, packing.py, loss.py, recipes.py,
embedded_model.py. Exports: free_port, measure_update_peak, bench_memory, bench_vocab,
bench_load.
"""

from __future__ import annotations

import json
import subprocess
import sys


def free_port() -> int:
    """A free TCP port on loopback for a child torchrun / process group."""
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


# One update micro-batch of one sequence (prompt 64 + `resp` response tokens) through a
# random Qwen2-shaped model built as policy.build_policy builds it (FSDP2, bf16 compute,
# packed-sequence attention, ScoredHead for the new path), in a fresh interpreter: peak
# RSS growth over the state after a warm-up step on an 8-token response (parameters,
# gradients, allocator pools exist by then, in both variants alike).
_MEMORY_CHILD = r"""
import os, sys, torch
sys.path.insert(0, {root!r})
def hwm():  # this process's peak RSS in KiB (ru_maxrss would include the parent's, inherited at fork)
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r})
import torch.distributed as dist
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from transformers import Qwen2Config, Qwen2ForCausalLM
import packing, policy
from loss import ScoredHead, entropy_from_logits, policy_loss, token_logprobs
# A one-rank gloo group: FSDP2 needs a process group even for one rank.
dist.init_process_group("gloo")
# A random model of the requested shape (head_dim 64), packed-sequence attention.
cfg = Qwen2Config(vocab_size={vocab}, hidden_size={hidden}, intermediate_size={inter}, num_hidden_layers={layers},
                  num_attention_heads={hidden} // 64, num_key_value_heads=max(1, {hidden} // 128),
                  max_position_embeddings=16384, tie_word_embeddings=False)
torch.manual_seed(0)
model = Qwen2ForCausalLM._from_config(cfg, attn_implementation=packing.register_packed_attention())
model.config.use_cache = False
if {ckpt}:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={{"use_reentrant": False}})
if {new}:  # the trainer's head; the old path keeps transformers' nn.Linear
    model.lm_head = ScoredHead(model.lm_head, {chunk})
# Sharded as policy.build_policy shards: per decoder layer, then the root; bf16 compute.
mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
for layer in model.model.layers:
    fully_shard(layer, mp_policy=mp)
fully_shard(model, mp_policy=mp)
prompt = 64
# One micro-batch: a 64-token prompt and a `resp`-token response, eq. 3.1 with an
# entropy bonus, backward (no optimizer: its state is not the subject).
def step(resp):
    tokens = torch.randint(0, cfg.vocab_size, (prompt + resp,)).tolist()
    b = packing.pack([(tokens, prompt)], "cpu")
    if {new}:
        lp, ent = policy.score(model, b, 0.7)
        lp, ent = lp[None], ent[None]  # [1, R]
    else:  # the full-logit path: [1, L, V] logits, then the reference functions
        logits = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits[:, prompt - 1:-1]
        lp = token_logprobs(logits, b["input_ids"][:, prompt:], 0.7)
        ent = entropy_from_logits(logits, 0.7)
    loss, _ = policy_loss(lp, lp.detach() - 0.01, torch.ones(1), torch.ones(1, resp), entropy=ent, entropy_coef=1e-3)
    loss.backward()
# The warm-up (an 8-token response) allocates gradients and allocator pools; the peak
# growth of the real step over it is what the response length costs.
step(8)
base = hwm()
step({resp})
print((hwm() - base) / 1024)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # no interpreter teardown: the gloo group's threads can abort there (tests/dist_exit.py)
"""


def measure_update_peak(resp: int, new: bool = True, vocab: int = 152064, hidden: int = 256, inter: int = 512,
                        layers: int = 2, ckpt: bool = False, chunk: int = 1024) -> float:
    """MiB of peak RSS growth for one update micro-batch (see _MEMORY_CHILD); also used by
    tests/test_memory.py to check memory_plan.py against a measurement.

    new=True is the trainer's path (loss.ScoredHead, chunk positions at a time), False
    the full-logit path it replaced. Runs in a fresh interpreter on a free port, with
    vLLM's environment variables dropped so its allocator settings cannot leak in."""
    import os

    root = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LD_PRELOAD"))}
    port = str(free_port())
    code = _MEMORY_CHILD.format(root=root, port=port, vocab=vocab, hidden=hidden, inter=inter, layers=layers,
                                ckpt=ckpt, new=new, chunk=chunk, resp=resp)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return float(out.stdout.split()[-1])


def bench_memory(lengths: tuple = (512, 1024, 2048, 4096, 8192), hidden: int = 256, chunk: int = 1024) -> dict:
    """Peak memory of one update micro-batch as the response grows: the loss head's cost.

    The model has the Qwen2 vocabulary (V = 152,064, the 7B recipe's) and a 2-layer,
    256-wide body, so the head dominates as it does for the 7B at 32K tokens. Old path:
    full [L, V] bf16 logits from transformers' lm_head, then token_logprobs and
    entropy_from_logits with autograd (which keeps float32 copies per logit). New path:
    loss.head_logprobs, chunk positions at a time, recomputed in backward. Each point is
    one fresh process (measure_update_peak); the old path is skipped where it would need
    more than half of the free RAM (~14 bytes x V per token: 16 GB at 8K tokens).

    Reported: the peak at each length, and the growth per 1K response tokens between
    the two longest lengths measured (once the head's chunk is full, R >= chunk, that
    growth is what scales), next to the naive cost: 1K tokens of bf16 logits."""
    import psutil  # the free RAM decides whether the old path may run at a length

    res: dict = {"old": {}, "new": {}}
    # Every (path, length) in its own process, old path first.
    for path in ("old", "new"):
        for resp in lengths:
            # The old path keeps ~14 bytes x V per token: skip it where that would not
            # fit in half of the free RAM (the table says so).
            need = (resp + 64) * 152064 * 14 / 2**20
            if path == "old" and need > psutil.virtual_memory().available / 2**20 / 2:
                res[path][resp] = None
                continue
            res[path][resp] = measure_update_peak(resp, new=path == "new", hidden=hidden, inter=2 * hidden, chunk=chunk)
    # The naive cost: what 1K positions of bf16 logits alone occupy.
    naive = 1024 * 152064 * 2 / 2**20  # MiB of 1K tokens' bf16 logits
    slope = {}
    for path in res:  # MiB per 1K tokens between the two longest responses measured (once
        # the head's chunk is full, R >= chunk, growth is what scales with length)
        (l1, v1), (l2, v2) = [(L, v) for L, v in res[path].items() if v is not None][-2:]
        slope[path] = 1024 * (v2 - v1) / (l2 - l1)
    # The table: peak MiB per response length, growth per 1K tokens, and its ratio to the
    # naive cost; "skipped" where the old path would not have fit.
    head = "| update micro-batch, V = 152,064, 2-layer 256-wide body, bf16 | " + " | ".join(f"R={L}" for L in lengths) + \
           " | MiB per 1K tokens | vs 1K bf16 logits |"
    rows = [head, "|---" * (len(lengths) + 3) + "|"]
    for path, label in (("old", "full logits (token_logprobs + entropy_from_logits)"), ("new", "chunked head (loss.head_logprobs)")):
        cells = [f"{res[path][L]:.0f}" if res[path][L] is not None else "skipped" for L in lengths]
        rows.append(f"| {label}, peak MiB | " + " | ".join(cells) + f" | {slope[path]:.0f} | {slope[path] / naive:.2f}x |")
    rows.append(f"| 1K tokens of bf16 logits (naive cost) | " + " | ".join("" for _ in lengths) + f" | {naive:.0f} | 1.00x |")
    rows.append(f"| old / new growth | " + " | ".join("" for _ in lengths) + f" | {slope['old'] / max(slope['new'], 1e-9):.0f}x | |")
    return {"table": "\n".join(rows), "results": res, "slope_mib_per_1k": slope}


# Runs under torchrun (2 gloo ranks): peak RSS of each rank while the policy is built,
# the old way (every rank loads the whole float32 checkpoint, then FSDP2 shards it) or
# policy.build_policy (meta-device skeleton on every rank, rank 0 reads, broadcast).
_LOAD_CHILD = r"""
# One rank of the load benchmark (bench_load writes this file and runs it under torchrun).
import json, os, sys, torch
sys.path.insert(0, {root!r})
import torch.distributed as dist
import policy
from recipes import Config
# Imported before the baseline (build_policy's and the old path's libraries), so their
# own memory is not counted as the model's.
import accelerate, transformers
from torch.distributed.checkpoint.state_dict import set_model_state_dict  # noqa: F401
from torch.distributed.fsdp import fully_shard
from transformers import AutoConfig, AutoModelForCausalLM
with torch.device("meta"):
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained({path!r}))  # import the model classes, allocate nothing
dist.init_process_group("gloo")
import gc; gc.collect()
hwm = lambda: int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))  # peak RSS, KiB
before = hwm()
if {new}:
    model = policy.build_policy({path!r}, Config(grad_checkpointing="off"), torch.device("cpu"))
else:
    model = AutoModelForCausalLM.from_pretrained({path!r}, dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
peak = hwm()
# Rank 0 prints both ranks' growth (MiB) as one JSON line.
out = [None, None]
dist.all_gather_object(out, (peak - before) / 1024)
if dist.get_rank() == 0:
    print(json.dumps(out))
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # no interpreter teardown: the gloo group's threads can abort there (tests/dist_exit.py)
"""


def bench_vocab(lengths: tuple = (512, 8192)) -> dict:
    """train.py end to end at the 7B's vocabulary: the peak host RSS of a rank for one step.

    Subject: `torchrun --nproc_per_node=2 train.py` for one step on
    embedded_model.small_body_model (the 7B tokenizer from the GGUF header, V = 152,064,
    on a random 2-layer, 256-wide body): D_R = 2 prompts x G = 2 samples, responses of up
    to T tokens, rejection sampling off (a random model's groups are all wrong and would
    all be rejected: no update). A random model almost never samples EOS among 152K
    tokens, so the responses run to T and the update sees sequences of T tokens.
    Baseline: the same run at T = 512. The peak is train.py's own `host_rss_peak_gib`
    metric (VmHWM, max over the ranks), the vLLM engine included; the growth from 512 to
    8,192 is what the response length costs."""
    import os
    import tempfile

    from embedded_model import small_body_model

    root = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp(prefix="bench-vocab-")
    model = small_body_model(os.path.join(tmp, "model"))
    res = {}
    for T in lengths:
        out = os.path.join(tmp, f"T{T}")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "train.py", "--recipe", "tiny", "--model", model, "--rollout-batch-size", "2", "--mini-batch-size", "2",
               "--group-size", "2", "--max-response-len", str(T), "--rejection-sampling", "false", "--max-steps", "1",
               "--eval-k", "0", "--save-every", "0", "--output-dir", out]
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode != 0:
            raise RuntimeError(p.stdout[-2000:] + p.stderr[-3000:])
        (rec,) = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
        res[T] = {"peak_gib": rec["host_rss_peak_gib"], "tokens": rec["tokens"], "len_max": rec["response_len_max"],
                  "t_update": rec["t_update"]}
    base = res[lengths[0]]["peak_gib"]
    rows = ["| train.py, 2 CPU ranks, V = 152,064 (2-layer body), D_R 2 x G 2, one step | peak RSS of a rank GiB | "
            "longest response | update tokens | vs T = " + f"{lengths[0]} |", "|---|---|---|---|---|"]
    for T, r in res.items():
        rows.append(f"| T = {T:,} | {r['peak_gib']:.2f} | {r['len_max']:.0f} | {r['tokens']:.0f} | "
                    f"{r['peak_gib'] - base:+.2f} GiB |")
    return {"table": "\n".join(rows), "results": res}


def bench_load() -> dict:
    """Peak host RSS growth per rank while building the FSDP2 policy (SmolLM2-135M, 2 gloo
    ranks): every rank loading the float32 checkpoint vs rank 0 loading + broadcast.

    Before: from_pretrained in float32 on every rank, then fully_shard -- a full copy per
    rank (8 x 30 GB of host RAM for a 7B on an 8-GPU node). After: policy.build_policy --
    a meta-device skeleton everywhere, shards allocated, rank 0 alone reads and
    broadcasts tensor by tensor. Rank 1 then holds its shard plus one full tensor in
    flight (the largest: the embedding). Libraries are imported before the baseline,
    so only the model's memory is counted."""
    import os

    from embedded_model import embedded_model_path

    root, path = os.path.dirname(os.path.abspath(__file__)), embedded_model_path()
    res = {}
    # Each variant is its own 2-rank torchrun job, its child script written next to
    # this file (so it imports the project) and removed after.
    for name, new in (("every rank loads the checkpoint (before)", False), ("policy.build_policy: rank 0 loads, broadcast", True)):
        port = free_port()
        # OMP_NUM_THREADS=1 per rank, as torchrun sets it for the trainer.
        code = _LOAD_CHILD.format(root=root, path=path, new=new)
        script = os.path.join(root, ".bench_load_child.py")
        with open(script, "w") as f:
            f.write(code)
        try:
            out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                                  script], capture_output=True, text=True, cwd=root,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        finally:
            os.remove(script)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    # The table: each rank's peak growth, before and after.
    rows = ["| building the FSDP2 policy, SmolLM2-135M (538 MB in float32), 2 gloo ranks | rank 0 peak growth MiB | "
            "rank 1 peak growth MiB |", "|---|---|---|"]
    for name, (r0, r1) in res.items():
        rows.append(f"| {name} | {r0:.0f} | {r1:.0f} |")
    return {"table": "\n".join(rows), "results": res}
