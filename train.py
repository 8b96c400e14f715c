"""MAGIC trainer: torchrun + FSDP2 + a colocated vLLM engine per rank. Report §3.1, §8.1.

    torchrun --nproc_per_node=8 train.py --stage 1               # Skywork-OR1-7B, stage 1
    torchrun --nproc_per_node=2 train.py --recipe tiny           # CPU demo (SmolLM2-135M)

main() is the training step of §3.1, one numbered banner per phase:

    1  sample D_R prompts (split across ranks)
    2  G rollouts per prompt with this rank's vLLM engine
    3  binary rewards (Math-Verify / sandbox, §7); a truncated response scores 0 (§3.2.3)
    4  per-prompt accuracy recorded (before rejection: online filtering needs it)
    5  group advantages, eq. 2.5 (optional truncation masks, §3.2.3)
    6  rejection sampling: drop groups with all-equal rewards
    7  old log-probabilities, recomputed by the training model
    8  N_reuse x (D_R / D_T) SGD steps on eq. 3.1, normalised by the SGD step's global
       token count
    9  adaptive entropy controller update (§3.2.5)
    10 weight sync FSDP2 -> vLLM
    11 metrics (metrics.jsonl, console, curves.png);  12 checkpoint every K steps

Everything else -- where a stage starts, its prompts and filters, the memory plan, the
engine and the policy, resume, the end of a stage -- is a named function below main().
A SIGTERM (preemption) stops the run at the step's safe point, after phase 3, with a
checkpoint of the last complete step and exit code 75 (preemption.py).
Multi-stage (§3.2.2): `--stage N` starts from stage N-1's final model in the same output
folder, drops the prompts stage N-1 solved G/G (online filtering) and continues the step
count. `--resume` continues a stage from its newest checkpoint; `--eval-k K` evaluates
held-out avg@K before and after the stage with the same engine.

Imports: recipes.py (settings), data.py, data_filter.py, rollout.py, rewards.py, loss.py,
entropy_control.py, policy.py, packing.py, distributed.py, checkpoint.py, preemption.py,
plots.py, memory_plan.py, eval.py, embedded_model.py. Exports: main.
"""

from __future__ import annotations

import os
import sys

# A quiet console by default (--verbose restores it). torch's C++ code reads its log
# level when torch is imported, so it is set before the imports below; vLLM's and
# transformers' levels are set by distributed.quiet_console, first thing in main().
if "--verbose" not in sys.argv:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import dataclasses  # noqa: E402  (after the console settings above)
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import data  # noqa: E402
import data_filter  # noqa: E402
import distributed  # noqa: E402
import packing  # noqa: E402
import plots  # noqa: E402
import policy  # noqa: E402
import rewards  # noqa: E402
from checkpoint import (CheckpointNotWritten, load_checkpoint, newest_loadable, save_checkpoint, save_hf,  # noqa: E402
                        seed_everything)
from entropy_control import AdaptiveEntropyController  # noqa: E402
from loss import group_advantages  # noqa: E402
from preemption import Preempted, Preemption  # noqa: E402
from recipes import Config, parse_config, stage_table  # noqa: E402
from rollout import build_engine, sample_seed  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    distributed.quiet_console(cfg.verbose)  # vLLM / transformers INFO lines off (before either loads)
    if cfg.dry_run:
        return dry_run(cfg)
    run = start_stage(cfg)  # start model, prompts, memory plan, engine, policy, resume
    engine, model, optim, G = run.engine, run.model, run.optim, cfg.group_size
    while run.it < run.steps:
        t_start = time.perf_counter()
        # Python's, NumPy's and torch's RNGs from (seed, stage, batch) alone: the same on
        # every rank, so nothing random depends on the rank or the number of ranks, and a
        # resume (on any number of ranks) needs no RNG state saved.
        seed_everything(rollout_seeds(cfg, run.draw, [-1])[0])
        # ==== 1. sample D_R prompts =======================================================
        # One seeded permutation of the stage's prompts, walked D_R at a time (epochs wrap).
        # `draw` counts rollout batches (a batch whose groups are all rejected is drawn
        # but is not a step). Rollout group d of dp_world takes every dp_world-th prompt.
        slots = list(range(cfg.rollout_batch_size))[run.dp_rank::run.dp_world]  # places in the batch
        batch = [run.prompt_ids[run.order[(run.draw * cfg.rollout_batch_size + j) % len(run.order)]] for j in slots]
        # Phases 2-3 hold no collective: a SIGTERM abandons them at once (preemption.py).
        try:
            with run.preempt.interruptible(allowed=cfg.rollout.tensor_parallel_size == 1):
                # ==== 2. G rollouts per prompt (vLLM) ======================================
                # Every sample draws its own random stream, keyed by (seed, stage, batch,
                # place, sample): a resumed run samples the same responses, the ranks of one
                # TP group agree, and the number of ranks does not change what is drawn.
                # The engine is awake with the trainer's current weights (the last sync woke
                # it); generate() raises otherwise (rollout.EngineState).
                t0 = time.perf_counter()
                samples = engine.generate([run.rows[p]["prompt"] for p in batch], n=G, temperature=cfg.temperature,
                                          top_p=cfg.top_p, max_new_tokens=cfg.max_response_len,
                                          seed=rollout_seeds(cfg, run.draw, slots))
                t_rollout = time.perf_counter() - t0
                # Prompts longer than the prompt budget were dropped by the engine (and
                # counted); `prompts` indexes the kept ones, G contiguous samples each.
                samples, prompts = tp_share(run, samples)
                # ==== 3. rewards (binary, §7) ==============================================
                # A truncated response (finish reason "length") scores 0 without being
                # graded (§3.2.3; --truncated-reward grade keeps grading it, as released).
                # A grading worker that dies is replaced and its responses graded again
                # once; still failing, they score 0 and are counted (scores.errors).
                trunc = torch.tensor([s.truncated for s in samples], dtype=torch.bool)  # [P*G]
                scores = rewards.score_batch([run.rows[batch[s.prompt_index]] for s in samples], [s.text for s in samples],
                                             cfg.reward_workers, truncated=trunc.tolist() if cfg.truncated_reward == "zero" else None)
                r = torch.tensor(scores, dtype=torch.float32)  # [P*G]
        except Preempted:
            pass  # this step's rollout is abandoned; nothing of the run's state has changed
        # Preemption's safe point, once per step (one tiny all-reduce): if any rank got a
        # SIGTERM, every rank saves the last complete step and exits 75 (preemption.py).
        if distributed.all_max(run.preempt.signalled):
            preempted(run)
        # ==== 4. per-prompt accuracy, recorded BEFORE rejection sampling ===================
        for g, pi in enumerate(prompts):  # rejection drops the G/G groups online filtering needs
            run.stats.record(batch[pi], r[g * G:(g + 1) * G].tolist())
        # ==== 5. group advantages, eq. 2.5 (truncation-mask ablations, §3.2.3) =============
        adv = group_advantages(r, G, truncated=trunc, mask_mode=cfg.adv_mask)  # [P*G]
        # ==== 6. rejection sampling: keep only groups with non-identical rewards ===========
        # Their advantages are all 0: no policy gradient, but they would dilute eq. 3.1's
        # token mean and weigh up the entropy term. The batch shrinks; it is not refilled.
        groups = data_filter.rejection_sample(r, G).tolist() if cfg.rejection_sampling else list(range(len(prompts)))
        # Distribution only: the kept sequences are dealt to ranks by token count for the
        # update; `minis` holds each mini-batch's global token and sequence counts.
        seqs, minis = spread_over_ranks(run, samples, groups, adv, [slots[p] for p in prompts])
        run.draw += 1
        if minis is None:  # every group of every rank rejected: not a step (released code)
            skip_batch(run)  # the engine stays awake: the policy did not change, no sync needed
            continue
        # Only now, with an update certain, does the engine sleep (GPU: level 2 frees its
        # weights and KV cache for the update; step 10's sync brings both back). Sleeping
        # before a skipped batch would leave the next rollout without weights.
        engine.sleep()
        # ==== 7. old log-probs with the training model (and the reference for KL) ========
        # The released code recomputes log pi_old with the trainer instead of using the
        # engine's log-probs: same weights, but the trainer's numerics.
        t0 = time.perf_counter()
        old_lp = policy.old_logprobs(model, [s[:2] for s in seqs], cfg, run.pad_id, run.device)  # [R_i] each
        ref_lp = policy.old_logprobs(run.ref_model, [s[:2] for s in seqs], cfg, run.pad_id, run.device) if run.ref_model is not None else None
        # ==== 8. N_reuse x (D_R / D_T) SGD steps, loss eq. 3.1 ===========================
        coef = run.ent_ctl.coef  # alpha_k, decided by the previous step's entropy (one-step lag)
        # One SGD step per mini-batch and pass; on-policy (D_R == D_T, N_reuse 1) that is
        # one step whose importance ratio is exactly 1, so the clip never binds.
        agg, grad_norms = dict.fromkeys(policy.AGG_KEYS + (("kl_ref",) if run.ref_model is not None else ()) + ("loss",), 0.0), []
        nonfinite = 0  # SGD steps skipped for a NaN/inf gradient norm
        for reuse in range(cfg.n_reuse):
            for m, (n_tok, n_seq) in enumerate(minis):
                if n_tok == 0:
                    continue  # no kept group in this mini-batch on any rank: no SGD step
                mine = [i for i, s in enumerate(seqs) if s[3] == m]  # this rank's share of mini-batch m
                mets = policy.accumulate_gradients(
                    model, [seqs[i][:2] for i in mine], [old_lp[i] for i in mine], [seqs[i][2] for i in mine],
                    [ref_lp[i] for i in mine] if ref_lp is not None else None, n_tok if cfg.loss_agg == "token-mean" else n_seq,
                    coef, cfg, run.pad_id, run.device)  # eq. 3.1, divided by the step's global token count
                for k in agg if reuse == 0 else ():  # metrics of the first pass over the buffer
                    agg[k] += mets[k]
                # The gradient norm over all shards (a DTensor collective), clipped to 1.0.
                gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                gn = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)
                if not math.isfinite(gn):  # a NaN/inf loss or gradient: no AdamW step (it would poison
                    nonfinite += 1         # the moments for good); the norm is global, so every rank agrees
                else:
                    grad_norms.append(gn)
                    optim.step()
                optim.zero_grad(set_to_none=True)
        t_update = time.perf_counter() - t0
        agg["loss"] /= max(1, sum(1 for n_tok, _ in minis if n_tok))  # eq. 3.1 per SGD step (first pass)
        # ==== 9. adaptive entropy control (§3.2.5) =========================================
        # e_k as in the released code: -mean log pi_old(sampled token) over the step's kept
        # response tokens (here over every rank's); the new coefficient is used by the
        # NEXT step's loss (one-step lag).
        ent = distributed.all_sum({"sum": -sum(float(lp.sum()) for lp in old_lp), "n": sum(len(lp) for lp in old_lp)})
        step_entropy = ent["sum"] / ent["n"] if ent["n"] else float("nan")
        if math.isfinite(step_entropy):  # no tokens, or non-finite log-probs: the controller holds
            run.ent_ctl.update(step_entropy)
        # ==== 10. weight sync FSDP2 -> engine ==============================================
        # Streams one full parameter at a time (a collective on every rank) into vLLM and
        # resets its prefix cache; the next rollout samples from the updated policy.
        t_sync = engine.sync_weights(model)
        # ==== 11. metrics ==================================================================
        # One record per step: metrics.jsonl, the console line, curves.png, tensorboard/wandb.
        rec = step_metrics(run, samples, r, trunc, prompts, groups, agg, grad_norms, coef, step_entropy,
                           {"t_rollout": t_rollout, "t_update": t_update, "t_sync": t_sync},
                           [slots[smp.prompt_index] for smp in samples], scores.errors)
        rec["t_other"] = time.perf_counter() - t_start - t_rollout - t_update
        rec["nonfinite_sgd_steps"] = nonfinite
        log_step(run, rec, samples, r, batch)
        run.it, run.skipped = run.it + 1, 0
        check_nonfinite(run, nonfinite)
        # ==== 12. checkpoint =================================================================
        if cfg.save_every and run.it % cfg.save_every == 0 and run.it < run.steps:  # the last: finish_stage
            save_step(run)
        run.bar.update(1)
    finish_stage(run)


# ------------------------------------------------------------------------------------
# The start of a stage
# ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What a stage's loop works with: the config, the ranks, the data, the engine and
    the policy, and where the loop stands (`it` steps done, `draw` batches drawn)."""

    # Fixed for the stage: settings, ranks, folders, the prompt pool and its order.
    cfg: Config
    rank: int
    world: int
    device: torch.device
    out: Path  # the run folder; stage_dir = out / stage<N>
    stage_dir: Path
    rows: list  # the stage's rows (released schema), code rows upsampled
    prompt_ids: list  # rows[i] still in the pool after online filtering
    order: list  # the seeded permutation of prompt_ids
    step0: int  # global steps of earlier stages
    steps: int  # steps of this stage
    dp_rank: int  # rollout group (vLLM tensor parallelism: tp ranks share one engine)
    dp_world: int
    tp_rank: int
    # Built by start_stage: the rollout engine, the policy and what trains it.
    engine: object = None
    tokenizer: object = None
    pad_id: int = 0
    model: object = None
    ref_model: object = None
    optim: object = None
    ent_ctl: AdaptiveEntropyController = None
    stats: data_filter.PromptStats = None
    logger: object = None
    bar: object = None
    # Where the loop stands: steps done, rollout batches drawn, batches skipped in a row
    # (all three are restored by --resume).
    it: int = 0
    draw: int = 0
    skipped: int = 0
    nonfinite: int = 0  # training steps in a row with a non-finite gradient norm
    saved: int = 0  # steps done at the newest checkpoint on disk (0: none)
    failed_saves: int = 0  # checkpoints in a row that could not be written
    preempt: Preemption = None  # the SIGTERM handler (preemption.py)


def start_stage(cfg: Config) -> Run:
    """Everything before the first step: ranks, the start model, the memory plan, the
    stage's prompts, the engine, the policy and optimizer, and a resume if asked."""
    # Ranks first: every later step (the start model, the memory plan) may need a
    # collective or rank 0's answer. gloo on CPU, nccl on GPU; one rank outside torchrun.
    rank, world, device = distributed.join(cfg.cpu_offload, cfg.dist_timeout_min)
    # From here a SIGTERM is a request to stop at the next safe point (preemption.py).
    preempt = Preemption(cfg.preempt_grace_s, rank)
    out, stage_dir = Path(cfg.output_dir), Path(cfg.output_dir) / f"stage{cfg.stage}"
    # Several nodes: rank 0 alone creates, renames and deletes the run's folders, and
    # every rank reads them (stage N-1's model, checkpoints): one folder all nodes see.
    distributed.check_shared_folder(out, "--output-dir")
    if rank == 0:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        (out / "preempted.json").unlink(missing_ok=True)  # an earlier preemption is being resumed
    # Stage 1 starts from --model; stage N from stage N-1's final folder.
    start = start_model(cfg, out)
    distributed.print0(f"[magic] recipe={cfg.recipe} stage={cfg.stage} world={world} device={device} start={start} "
                       f"dtype={cfg.param_dtype}/{cfg.rollout.dtype} (update/rollout)")
    # The memory plan from the model's config alone: refuse a run that cannot fit before
    # any weight is loaded; choose gradient checkpointing and vLLM's memory share.
    device_gib = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    gib = cfg.gpu_memory_gib or device_gib
    if gib:
        distributed.print0(check_memory(cfg, start, world, gib, refuse=True, device_gib=device_gib))
    elif cfg.grad_checkpointing == "auto":  # CPU: plan against this machine's RAM per local rank
        import psutil

        check_memory(cfg, start, world, psutil.virtual_memory().total / 2**30 / int(os.environ["LOCAL_WORLD_SIZE"]), False)
    # The stage's prompt pool: every filter prints what it kept.
    rows, prompt_ids, step0 = stage_prompts(cfg, out)
    # Distribution only: with vLLM tensor parallelism, `tp` consecutive ranks share one
    # engine (same prompts, same seeds); the world is `world // tp` rollout groups.
    tp = cfg.rollout.tensor_parallel_size
    if world % tp or cfg.rollout_batch_size % (world // tp):
        raise SystemExit(f"--rollout-tensor-parallel-size {tp} must divide the world size {world}, and the "
                         f"{world // max(tp, 1)} rollout groups must divide --rollout-batch-size {cfg.rollout_batch_size}")
    # One permutation of the pool, from --seed alone: every rank (and a resumed run) walks
    # the prompts in the same order, D_R per rollout batch.
    order = torch.randperm(len(prompt_ids), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    run = Run(cfg, rank, world, device, out, stage_dir, rows, prompt_ids, order, step0,
              cfg.steps if cfg.max_steps < 0 else cfg.max_steps, rank // tp, world // tp, rank % tp, preempt=preempt)
    # The engine first: vLLM reseeds Python/NumPy/torch RNGs when it starts.
    from transformers import AutoTokenizer

    # The stage's own tokenizer (chat template, pad/eos ids): the engine encodes prompts
    # with it, the packed micro-batches use its pad id for their zero-weight dummies.
    run.tokenizer = AutoTokenizer.from_pretrained(start)
    run.pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else run.tokenizer.eos_token_id
    # The engine's context is the stage's prompt budget + T (§3.2.2: T grows by stage).
    engine_cfg = dataclasses.replace(cfg.rollout, max_model_len=cfg.rollout.max_prompt_len + cfg.max_response_len, seed=cfg.seed)
    run.engine = build_engine(start, engine_cfg, run.tokenizer)
    seed_everything(cfg.seed)  # after vLLM's reseeding (each step reseeds again: main())
    # The policy: fp32 master weights sharded by FSDP2 over all ranks. A reference copy
    # only for the KL ablation (MAGIC has no KL term, §3.2.6).
    run.model = policy.build_policy(start, cfg, device)
    run.ref_model = policy.build_policy(start, cfg, device) if cfg.kl_coef > 0 else None
    # AdamW on the float32 shards (released scripts: lr 1e-6 constant, weight decay 0.01).
    run.optim = torch.optim.AdamW(run.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # §3.2.5: the coefficient alpha_k of eq. 3.1's entropy term (fixed / off: ablations).
    if cfg.entropy_mode == "adaptive":
        run.ent_ctl = AdaptiveEntropyController(cfg.target_entropy, cfg.entropy_delta, cfg.entropy_coef_min, cfg.entropy_coef_max)
    else:
        run.ent_ctl = AdaptiveEntropyController.fixed(cfg.entropy_coef if cfg.entropy_mode == "fixed" else 0.0)
    run.stats = data_filter.PromptStats()  # per-prompt accuracy: stage N+1's online filter
    if rank == 0:  # metrics.jsonl is always written; tensorboard / wandb besides, on request
        run.logger = plots.MetricsLogger(cfg.report_to, out, f"{cfg.recipe}-stage{cfg.stage}", dataclasses.asdict(cfg))
    # The engine sleeps while a checkpoint loads: DCP's load creates the optimizer state
    # (AdamW moments, zeroed gradients, temporaries: ~14 GiB per GPU for the 7B on 8)
    # that an awake vLLM would leave no room for. resume_or_start_fresh checks it.
    run.engine.sleep()
    resume_or_start_fresh(run)
    # Push the trainer's weights before the first rollout (this wakes the engine), so it
    # holds exactly what the trainer holds (cast to the engine dtype) from step one.
    run.engine.sync_weights(run.model)
    # The baseline: held-out avg@k of the starting model (not again on a resume).
    if cfg.eval_k and run.it == 0:
        held_out_eval(run, "before")
    n_sgd = cfg.n_reuse * (cfg.rollout_batch_size // cfg.mini_batch_size)
    distributed.print0(f"[magic] {len(prompt_ids)} prompts, {run.steps} steps, D_R={cfg.rollout_batch_size} "
                       f"D_T={cfg.mini_batch_size} G={cfg.group_size} T={cfg.max_response_len} N_SGD={n_sgd}")
    # A progress bar over the stage's steps (rank 0, stderr); the step lines go above it.
    from tqdm import tqdm

    run.bar = tqdm(total=run.steps, initial=run.it, desc=f"stage {cfg.stage}", unit="step", disable=rank != 0,
                   dynamic_ncols=True)
    return run


def start_model(cfg: Config, out: Path) -> str:
    """Where this stage starts: --init-from, stage N-1's final model, or --model
    ("embedded" is converted once per node, by its local rank 0, into that node's cache:
    nodes need not share a home)."""
    if cfg.init_from:
        return cfg.init_from
    if cfg.stage > 1:
        prev = out / f"stage{cfg.stage - 1}" / "final"
        if not (prev / "config.json").exists():
            raise SystemExit(f"--stage {cfg.stage}: {prev} not found; run stage {cfg.stage - 1} first or pass --init-from")
        return str(prev)
    from embedded_model import resolve_model

    return distributed.per_node(lambda: resolve_model(cfg.model))


def stage_prompts(cfg: Config, out: Path) -> tuple[list, list, int]:
    """The stage's rows and prompt pool, each filter's count printed: the released data
    filter (§6.2: 1..15 correct of 16 for --difficulty-model), code rows upsampled, and
    at stage N > 1 online filtering (§3.1: drop the prompts stage N-1 solved G/G).
    Returns (rows, ids of the rows in the pool, global steps of earlier stages)."""
    toy = cfg.data in ("toy", "toy-rule")  # the built-in task has train/test splits of its own
    rows = data.load_rows(cfg.data, "train" if toy else cfg.data_splits, cfg.seed, cfg.toy_size)
    n_math = sum(r["ability"] == "math" for r in rows)
    distributed.print0(f"[data] {cfg.data}{'' if toy else f' ({cfg.data_splits})'}: {len(rows)} rows, "
                       f"{n_math} math, {len(rows) - n_math} code")
    if cfg.difficulty_model:
        rows, c = data_filter.select_by_difficulty(rows, cfg.difficulty_model, with_counts=True)
        distributed.print0(f"[data] difficulty 1..15 for {cfg.difficulty_model}: kept {c['kept']} of {c['in']} "
                           f"({c['out_of_range']} solved 0 or 16 times; {c['no_count']} without a count, dropped as released)")
        if not rows:
            raise SystemExit(f"--difficulty-model {cfg.difficulty_model!r} kept no row: is it a key of "
                             f"extra_info.model_difficulty in {cfg.data}? (--difficulty-model '' turns the filter off)")
    if any(r["ability"] == "code" for r in rows):
        rows = data_filter.upsample_code(rows, cfg.code_upsample)
        distributed.print0(f"[data] code rows listed {cfg.code_upsample}x (released mix): {len(rows)} rows")
    prompt_ids, step0 = list(range(len(rows))), 0  # stable ids: positions in the (upsampled) list
    prev = out / f"stage{cfg.stage - 1}"
    if cfg.stage > 1 and (prev / "prompt_stats.json").exists():
        solved = data_filter.PromptStats.load(str(prev / "prompt_stats.json")).solved()
        prompt_ids = [i for i in prompt_ids if i not in solved]
        distributed.print0(f"[magic] online filtering: dropped {len(rows) - len(prompt_ids)} prompts solved G/G in "
                           f"stage {cfg.stage - 1}; {len(prompt_ids)} left")
        if (prev / "final_step.json").exists():
            step0 = json.loads((prev / "final_step.json").read_text())["global_step"]
    return rows, prompt_ids, step0


def resume_or_start_fresh(run: Run) -> None:
    """--resume: model + optimizer shards, entropy controller, data position and this
    stage's prompt statistics from the newest loadable checkpoint, written by any number
    of ranks (checkpoint.load_checkpoint reshards). A fresh stage
    deletes that stage's old checkpoints and evaluations, so nothing of an earlier run can
    be resumed later. Either way the metric lines of steps about to be (re)done go."""
    cfg, root = run.cfg, run.stage_dir / "checkpoints"
    # The newest checkpoint whose files are intact, judged by rank 0 from the files alone
    # (one verdict for every rank); newer ones that are not are named with the reason.
    ckpt, skipped = distributed.on_rank0(lambda: newest_loadable(root)) if cfg.resume else (None, [])
    for folder, reason in skipped:
        distributed.print0(f"[magic] --resume: skipping {folder}: {reason}")
    if cfg.resume and ckpt is None:
        distributed.print0(f"[magic] --resume: no loadable checkpoint in {root}, starting the stage fresh")
    if ckpt is not None:
        # Shards, optimizer state and the trainer's own state: the resumed run continues
        # with the same data position, controller, RNG streams and statistics.
        if not run.engine.sleeping:  # the order start_stage keeps; a GPU would run out of memory
            raise RuntimeError("load_checkpoint needs the rollout engine asleep (engine.sleep() first)")
        meta, writers = load_checkpoint(ckpt, run.model, run.optim)
        if run.device.type == "cuda":  # load temporaries out of torch's cache before vLLM wakes
            torch.cuda.empty_cache()
        if meta["order"] != run.order:
            raise SystemExit(f"--resume: {ckpt} has another data order (changed --seed, --data or --toy-size?)")
        run.it, run.draw = meta["done"], meta.get("draws", meta["done"])  # (older checkpoints: one draw per step)
        run.saved = run.it
        run.ent_ctl.load_state_dict(meta["entropy_controller"])
        run.stats = data_filter.PromptStats.merged([w["stats"] for w in writers])  # rank 0: every writer's
        distributed.print0(f"[magic] resumed from {ckpt} after {run.it} steps of stage {cfg.stage}" + (
            f" (written by {meta['world_size']} ranks, resharded onto {run.world})" if meta["world_size"] != run.world else ""))
    elif run.rank == 0:
        # A fresh stage: an earlier run's checkpoints or evaluations in this folder must not
        # be picked up later by --resume (or eval.py's own resume).
        for name in ("eval_before", "eval_after", "checkpoints"):
            shutil.rmtree(run.stage_dir / name, ignore_errors=True)
    for path in (run.out / "metrics.jsonl", run.out / "samples.jsonl") if run.rank == 0 else ():
        if path.exists():
            keep = []  # lines of earlier stages and of steps already done stay
            for line in path.read_text().splitlines():
                try:
                    m = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a crash
                    continue
                if m["stage"] < cfg.stage or (m["stage"] == cfg.stage and m["step"] <= run.step0 + run.it):
                    keep.append(line)
            path.write_text("".join(line + "\n" for line in keep))


def check_memory(cfg: Config, model: str, gpus: int, gib: float, refuse: bool, device_gib: float | None = None) -> str:
    """memory_plan.py for this stage: resolves --grad-checkpointing auto (on only if the
    activations would not fit without it) and --rollout-gpu-memory-utilization 0 (vLLM
    gets what the plan leaves), then returns the plan as text. refuse=True exits with the
    flags to change when it does not fit."""
    import memory_plan as mp

    shape = mp.shape_of(model)  # from config.json alone (or the recipes' known shapes)
    kw = dict(gpus=gpus, gpu_gib=gib, prompt_len=cfg.rollout.max_prompt_len, response_len=cfg.max_response_len,
              micro_batch_tokens=cfg.micro_batch_tokens, head_chunk=cfg.head_chunk_tokens, cpu_offload=cfg.cpu_offload,
              tp=cfg.rollout.tensor_parallel_size,
              sleep=cfg.rollout.enable_sleep and cfg.rollout.backend == "vllm")  # the HF engine keeps its weights
    # Checkpointing costs a second forward of every layer: only where memory needs it.
    if cfg.grad_checkpointing == "auto":
        cfg.grad_checkpointing = "off" if mp.plan(shape, grad_checkpointing=False, **kw)["fits"] else "on"
    p = mp.plan(shape, grad_checkpointing=cfg.grad_checkpointing == "on", **kw)
    # vLLM's share of the GPU: its weights plus what is left for the KV cache once the
    # trainer's resident shards are counted (the update runs while vLLM sleeps). vLLM
    # applies the share to the device's real total, the plan to `gib`: convert.
    if not cfg.rollout.gpu_memory_utilization:
        cfg.rollout.gpu_memory_utilization = round(p["gpu_memory_utilization"] * gib / (device_gib or gib), 3)
    text = mp.format_plan(p, f"{cfg.recipe} stage {cfg.stage}, T={cfg.max_response_len}, "
                             f"grad checkpointing {cfg.grad_checkpointing}")
    if not p["fits"]:
        fixes = mp.suggestions(shape, {**kw, "grad_checkpointing": cfg.grad_checkpointing == "on"})
        text += "\n\nto make it fit, change:\n" + "\n".join(f"  {f}" for f in fixes)
        if refuse:
            raise SystemExit(text + "\n\n(refused before loading any weight; --gpu-memory-gib overrides the device size)")
    return text


def dry_run(cfg: Config) -> None:
    """--dry-run: the resolved config, the stage table and the memory plan; loads nothing."""
    # Everything a launch would use, with nothing loaded: a 7B plan runs on a laptop.
    print(json.dumps(dataclasses.asdict(cfg), indent=2))
    print(f"\nStages of recipe {cfg.recipe} (§8.1):\n{stage_table(cfg.recipe)}\n")
    model = cfg.init_from or cfg.model
    if model == "embedded":
        from embedded_model import resolve_model

        model = resolve_model(model)
    print(check_memory(cfg, model, cfg.gpus or 8, cfg.gpu_memory_gib or 80.0, refuse=False))


# ------------------------------------------------------------------------------------
# Inside a step: what only distribution needs, and the bookkeeping of steps 11 and 12
# ------------------------------------------------------------------------------------


def rollout_seeds(cfg: Config, draw: int, slots: list[int]) -> list[int]:
    """One seed per prompt of rollout batch `draw`, keyed by its place in the batch (not
    by rank): rollout.VLLMEngine derives sample j's stream from it, so no two samples of
    a run share a stream, even for the same prompt listed twice."""
    return [sample_seed(cfg.seed, cfg.stage, draw, j) for j in slots]


def tp_share(run: Run, samples: list) -> tuple[list, list]:
    """Distribution only. The kept prompts (over-long ones were dropped by the engine; a
    rank may have none) and, with vLLM tensor parallelism, this rank's share of its TP
    group's identical samples. Returns (samples, the prompt index of each group)."""
    tp = run.world // run.dp_world
    # The tp ranks of a group hold the same samples; each trains on every tp-th prompt.
    prompts = sorted({s.prompt_index for s in samples})[run.tp_rank::tp]
    if tp > 1:
        own = set(prompts)
        samples = [s for s in samples if s.prompt_index in own]
    return samples, prompts


def spread_over_ranks(run: Run, samples: list, groups: list[int], adv: torch.Tensor, places: list[int]):
    """Distribution only. Every rank learns every kept group's sequence lengths; mini-batch
    m takes every (D_R/D_T)-th kept group of the whole step in the order of their places
    in the rollout batch (so the mini-batches do not depend on the number of ranks), and
    its sequences go to the ranks by token count (packing.balance), sent with one
    all-to-all (packing.exchange). places[p]: the batch place of this rank's group p.
    Returns this rank's sequences as (tokens, prompt length, advantage, mini-batch) and,
    per mini-batch, (response tokens, sequences) over all ranks -- eq. 3.1's divisors --
    or minis=None when no rank kept a group."""
    G, n_mini = run.cfg.group_size, run.cfg.rollout_batch_size // run.cfg.mini_batch_size
    # (place, (prompt, response) lengths) of this rank's kept groups.
    mine = [(places[g], [(len(samples[g * G + j].prompt_ids), len(samples[g * G + j].response_ids)) for j in range(G)])
            for g in groups]
    # A few integers per sequence travel to everyone; the token ids move only once, below.
    everyone = [None] * run.world
    torch.distributed.all_gather_object(everyone, mine)
    all_groups = sorted(grp for part in everyone for grp in part)  # kept groups of the step, by place
    if not all_groups:
        return [], None
    own = {places[g]: g for g in groups}  # this rank's groups by place
    # Every rank computes the same assignment from the same lengths; it then sends only
    # the sequences it generated, each to its owner.
    items, dest, minis = [], [], []
    for m in range(n_mini):
        seqs = [(k, j) for k in range(m, len(all_groups), n_mini) for j in range(G)]
        minis.append((sum(all_groups[k][1][j][1] for k, j in seqs), len(seqs)))
        for (k, j), owner in zip(seqs, packing.balance([sum(all_groups[k][1][j]) for k, j in seqs], run.world)):
            g = own.get(all_groups[k][0])
            if g is not None:  # a sequence of this rank's rollout
                s = samples[g * G + j]
                items.append((s.prompt_ids + s.response_ids, [len(s.prompt_ids), float(adv[g * G + j]), m]))
                dest.append(owner)
    got = packing.exchange(items, dest, run.device)
    return [(tokens, int(nums[0]), nums[1], int(nums[2])) for tokens, nums in got], minis


def skip_batch(run: Run) -> None:
    """A rollout batch whose groups were all rejected: no update, no controller move, not
    a step (the released trainer `continue`s). Many in a row means nothing can be learnt."""
    run.skipped += 1
    distributed.print0(f"[magic] rollout batch {run.draw}: every group rejected (all-equal rewards); "
                       f"not a step ({run.skipped} in a row)")
    if run.skipped >= run.cfg.max_skipped_batches:
        raise SystemExit(f"{run.skipped} rollout batches in a row had every group rejected: the policy solves all or "
                         f"none of these prompts (check the data, the reward, or --difficulty-model)")


def check_nonfinite(run: Run, nonfinite: int) -> None:
    """A step with a NaN/inf gradient norm took no optimizer step for it (counted in the
    step's metrics and console line). Several such steps in a row means the run cannot
    recover by itself: stop, saying so."""
    run.nonfinite = run.nonfinite + 1 if nonfinite else 0
    if run.nonfinite >= run.cfg.max_nonfinite_steps:
        raise SystemExit(f"{run.nonfinite} training steps in a row had a non-finite (NaN/inf) loss or gradient norm; "
                         f"their optimizer steps were skipped. Resume from the last checkpoint with a lower --lr, or "
                         f"check --temperature and the data (--max-nonfinite-steps sets how many are tolerated)")


def step_metrics(run: Run, samples, r, trunc, prompts, groups, agg, grad_norms, coef, entropy, times,
                 places: list[int], reward_errors: int) -> dict:
    """Step 11's record: sums over ranks in one collective, rates divided on the way out.
    reward_mean is over all samples before rejection; trunc_ratio is the report's "clip
    ratio"; the update's numbers are token-weighted over its first pass; loss is eq. 3.1
    per SGD step. rollout_digest fingerprints every sampled response and its reward
    (places: each sample's place in the rollout batch), independently of the ranks: two
    runs drew the same responses and rewards iff their digests agree (up to collisions)."""
    lens = [len(s.response_ids) for s in samples]  # every sampled response, before rejection
    G = run.cfg.group_size
    # One CRC32 per sample of (place, sample, response tokens, reward), summed: the order of
    # the ranks does not matter, and the float64 sum stays exact below 2^21 samples.
    digest = sum(zlib.crc32(repr((place, i % G, smp.response_ids, float(r[i]))).encode())
                 for i, (place, smp) in enumerate(zip(places, samples)))
    s = distributed.all_sum({"r": r.sum().item(), "n": len(r), "trunc": trunc.sum().item(), "len": sum(lens),
                             "r_nt": r[~trunc].sum().item(), "n_nt": (~trunc).sum().item(), "digest": digest,
                             "errors": reward_errors, "groups": len(prompts), "kept": len(groups),
                             **{f"m_{k}": v for k, v in agg.items()}})
    n, tok = max(s["n"], 1), s["m_tokens"]
    rec = {"stage": run.cfg.stage, "step": run.step0 + run.it + 1,
           "reward_mean": s["r"] / n, "kept_group_frac": s["kept"] / max(s["groups"], 1),
           "entropy": entropy, "entropy_coef": coef, "next_entropy_coef": run.ent_ctl.coef,
           "trunc_ratio": s["trunc"] / n, "acc_non_truncated": s["r_nt"] / max(s["n_nt"], 1),
           "response_len_mean": s["len"] / n, "response_len_max": distributed.all_max(max(lens, default=0)),
           # clip fractions, approx_kl, ratio, full-vocabulary entropy (, kl_ref)
           **{k: (s[f"m_{k}"] / tok if tok else float("nan")) for k in agg if k not in ("tokens", "loss")},
           "loss": s["m_loss"], "reward_errors": int(s["errors"]), "rollout_digest": f"{int(s['digest']) % 2**32:08x}",
           "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0, "lr": run.cfg.lr,
           "tokens": tok, "sgd_steps": len(grad_norms), **times, "skipped_batches": run.skipped,
           # memory high-water marks, the largest over ranks: host RSS (vLLM + trainer), GPU
           "host_rss_peak_gib": distributed.all_max(host_peak_gib())}
    if run.device.type == "cuda":  # the trainer's own allocations (vLLM's are its own pool)
        rec["gpu_peak_gib"] = distributed.all_max(torch.cuda.max_memory_allocated(run.device) / 2**30)
    return rec


def host_peak_gib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would start from the peak of
    the launcher it was forked from), in GiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20


def log_step(run: Run, rec: dict, samples, r, batch) -> None:
    """Rank 0: a metrics.jsonl line, a few completions in samples.jsonl (reward hacking
    shows there first), one console line, tensorboard/wandb, curves.png every K steps."""
    if run.rank != 0:
        return
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    G = run.cfg.group_size
    # The first sample of (up to) four groups: enough to watch what the policy learns.
    with open(run.out / "samples.jsonl", "a") as f:
        for i in range(0, min(len(samples), 4 * G), G):
            f.write(json.dumps({"stage": rec["stage"], "step": rec["step"], "response": samples[i].text,
                                "prompt": run.rows[batch[samples[i].prompt_index]]["prompt"][-1]["content"],
                                "reward": float(r[i]), "truncated": bool(samples[i].truncated)}) + "\n")
    # The one console line per step, above the progress bar.
    run.bar.write(f"[s{rec['stage']} {rec['step']:>5}] reward {rec['reward_mean']:.3f} kept {rec['kept_group_frac']:.2f} "
                  f"ent {rec['entropy']:.3f}/{rec['entropy_full']:.3f} coef {rec['entropy_coef']:.2e} "
                  f"trunc {rec['trunc_ratio']:.2f} len {rec['response_len_mean']:.0f}/{rec['response_len_max']:.0f} "
                  f"clip {rec['clip_frac_low'] + rec['clip_frac_high']:.3f} gnorm {rec['grad_norm']:.3f} "
                  + (f"NON-FINITE {rec['nonfinite_sgd_steps']} skipped " if rec["nonfinite_sgd_steps"] else "") + "| "
                  f"roll {rec['t_rollout']:.1f}s upd {rec['t_update']:.1f}s other {rec['t_other']:.1f}s")
    run.bar.set_postfix(reward=f"{rec['reward_mean']:.2f}", ent=f"{rec['entropy']:.2f}")
    run.logger.log(rec)
    if run.cfg.plot_every and (run.it + 1) % run.cfg.plot_every == 0:
        plots.try_plot_run(run.out, run.cfg.target_entropy)


def save_step(run: Run) -> bool:
    """Step 12: a resumable checkpoint after run.it steps (checkpoint.py: atomic).

    A checkpoint that cannot be written (a full disk) leaves the older ones intact; the
    run goes on without it -- the trained state is in memory and the next checkpoint
    may succeed once space is freed -- but stops if the next one fails too: a disk that
    stays full would otherwise let a long run go on unprotected for days. Returns
    whether it was written."""
    root = run.stage_dir / "checkpoints"
    try:
        save_checkpoint(root, run.it, run.model, run.optim,
                        meta={"done": run.it, "draws": run.draw, "global_step": run.step0 + run.it,
                              "world_size": run.world, "order": run.order,
                              "entropy_controller": run.ent_ctl.state_dict(), "config": dataclasses.asdict(run.cfg)},
                        rank_state={"stats": run.stats.state_dict()}, keep=run.cfg.keep_checkpoints)
    except CheckpointNotWritten as e:
        run.failed_saves += 1
        if run.failed_saves >= 2:  # every rank stops; rank 0 says why
            raise SystemExit(f"[magic] {e}\n[magic] a second checkpoint in a row could not be written: stopping. "
                             f"Free space, then --resume (from step {run.saved})" if run.rank == 0 else 1) from None
        distributed.print0(f"[magic] {e}\n[magic] training goes on without it; the next checkpoint is tried at "
                           f"step {run.it + run.cfg.save_every}, and the run stops if that one fails too")
        return False
    run.saved, run.failed_saves = run.it, 0
    if run.rank == 0 and run.bar is not None:  # above the progress bar, like the step lines
        run.bar.write(f"[magic] checkpoint {root / f'step_{run.it:08d}'}")
    return True


def preempted(run: Run) -> None:
    """Every rank agreed to stop (a SIGTERM, preemption.py): checkpoint the last complete
    step (unless the newest checkpoint already holds it), leave preempted.json for the
    job script, and exit 75 -- resume me."""
    t0 = time.perf_counter()
    run.failed_saves = 0  # a full disk here ends the run with exit 75 all the same, not with an error
    wrote = run.it > run.saved and save_step(run)
    if run.rank == 0:
        (run.out / "preempted.json").write_text(json.dumps({
            "stage": run.cfg.stage, "steps_done": run.it, "global_step": run.step0 + run.it,
            "checkpoint": str(run.stage_dir / "checkpoints" / f"step_{run.saved:08d}") if run.saved else None,
            "exit_code": 75, "seconds_since_signal": round(run.preempt.seconds_since_signal(), 1)}))
        if run.logger is not None:
            run.logger.close()
    # Nobody leaves before rank 0 has written the marker: torchrun SIGTERMs the ranks still
    # running as soon as one exits, and a late second signal would cut rank 0 short.
    torch.distributed.barrier()
    what = (f"checkpoint step_{run.it:08d} written in {time.perf_counter() - t0:.1f} s" if wrote else
            f"the newest checkpoint holds step {run.saved}" if run.saved else "no step done yet, nothing to save")
    run.preempt.exit(f"[magic] preempted after {run.it} steps of stage {run.cfg.stage}: {what}, "
                     f"{run.preempt.seconds_since_signal():.1f} s after the signal; exit 75 -- run again with --resume")


# ------------------------------------------------------------------------------------
# The end of a stage, and the held-out evaluation around it
# ------------------------------------------------------------------------------------


def finish_stage(run: Run) -> None:
    """A plain transformers folder (transformers and vLLM load it), this stage's
    per-prompt accuracy (stage N+1's online filter reads it), the global step count
    (stage N+1 continues from it); then the held-out evaluation with the same problems
    and seeds as before training."""
    run.bar.close()
    # Each rank saw the groups it rolled out: merge every rank's prompt statistics.
    parts = distributed.all_gather([run.stats.state_dict()])
    # The final model as a plain transformers folder: gathered from the shards, written
    # by rank 0 into final.tmp/ and renamed (checkpoint.save_hf).
    save_hf(run.model, run.tokenizer, run.stage_dir / "final")
    if run.rank == 0:
        data_filter.PromptStats.merged(parts).save(str(run.stage_dir / "prompt_stats.json"))
        (run.stage_dir / "final_step.json").write_text(json.dumps({"global_step": run.step0 + run.steps}))
        plots.try_plot_run(run.out, run.cfg.target_entropy)
        run.logger.close()
        print(f"[magic] stage {run.cfg.stage} done: {run.stage_dir / 'final'}", flush=True)
    if run.cfg.eval_k:
        held_out_eval(run, "after")
        before, after = run.stage_dir / "eval_before" / "summary.md", run.stage_dir / "eval_after" / "summary.md"
        if run.rank == 0 and before.exists():
            print(f"[magic] held-out evaluation, before training:\n{before.read_text()}"
                  f"[magic] after training:\n{after.read_text()}", flush=True)
    # Distribution only: nobody leaves before the last collective, and vLLM goes last.
    torch.distributed.barrier()
    del run.engine  # after the last collective: deleting vLLM tears down the default group
    if run.cfg.rollout.backend != "vllm":  # vLLM's exit handler destroys the group itself
        torch.distributed.destroy_process_group()


def held_out_eval(run: Run, tag: str) -> None:
    """avg@k with the colocated engine (eval.py, data parallel over rollout groups) into
    <stage>/eval_<tag>/. Same problems and seeds before and after the stage."""
    import eval as evaluation  # eval.py (the module name shadows the builtin only here)

    cfg = run.cfg
    # The toy benchmark is the held-out split of the training task (same seed, never
    # trained on); seeds cfg.seed + 777 keep the eval's samples apart from training's.
    benches = [evaluation.load_benchmark(spec.strip(), cfg.seed, cfg.eval_size) for spec in cfg.eval_benchmarks.split(",")]
    res = evaluation.evaluate_benchmarks(run.engine, benches, cfg.eval_k, cfg.eval_temperature, 1.0, cfg.max_response_len,
                                         cfg.seed + 777, run.stage_dir / f"eval_{tag}",
                                         dist_info=(run.rank, run.world, cfg.rollout.tensor_parallel_size),
                                         truncated_reward=cfg.truncated_reward)
    for name, r in res.items():  # rank 0 only has results
        print(f"[magic] held-out {name} {tag} training: avg@{cfg.eval_k} {100 * r['avg@k']:.1f}% "
              f"pass@{cfg.eval_k} {100 * r['pass@k']:.1f}% ({r['problems']} problems, tau {cfg.eval_temperature})", flush=True)


if __name__ == "__main__":
    main()
