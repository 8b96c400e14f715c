"""A run's settings: every field of the config, the report's stage recipes, the command line.

Report §3.1 and §8.1 (Tables 10-12) train each model in stages whose context grows
(§3.2.2). A recipe is a dict of config overrides shared by all stages plus a per-stage
table of (steps, context length T, rollout batch D_R, mini-batch D_T, group size G).
Settings resolve in this order:

    Config() defaults  <-  recipe base  <-  recipe stage row  <-  command-line flags

    T    max response length of the stage (the context grows stage by stage, §3.2.2)
    D_R  prompts per training step;  D_T  prompts per SGD step (D_R == D_T: on-policy)
    G    responses per prompt

Every field has one line of documentation, shown by `python train.py --help`. The
engine's settings are rollout.RolloutConfig, nested as `cfg.rollout` (flags
--rollout-<field>); nothing is declared twice.

Imports: rollout.py (RolloutConfig, setting). Exports: Config, RECIPES, parse_config,
stage_table, native_bf16.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields

from rollout import DERIVED, RolloutConfig
from rollout import setting as arg  # a field with its one-line help: the one definition


@dataclass
class Config:
    """Every setting of a run, each in one place: the recipes below set most, the command
    line (one flag per field, --rollout-<field> for the engine's) overrides any."""

    # --- run -------------------------------------------------------------------------
    # Which recipe and stage, where the run lives, what it starts from and trains on.
    recipe: str = arg("or1-7b", 'Stage recipe from recipes.py: or1-7b, or1-math-7b, or1-32b, tiny.')
    stage: int = arg(1, "Stage of the recipe to run; stage N > 1 starts from stage N-1's final model.")
    output_dir: str = arg("", 'Run folder (default runs/<recipe>). Holds metrics.jsonl and stage<N>/ folders.')
    model: str = arg("embedded", 'Policy to start stage 1 from: a local folder, a hub id, or "embedded" (SmolLM2-135M).')
    init_from: str = arg("", "Explicit start model for this stage (overrides stage N-1's final model).")
    data: str = arg("toy", "'toy', a .jsonl/.parquet file, a hub dataset name or a local snapshot folder of one (Skywork-OR1-RL-Data schema).")
    data_splits: str = arg("math,code", 'Splits of a dataset repo to train on (Skywork/Skywork-OR1-RL-Data has "math" and "code"); ignored for files.')
    toy_size: int = arg(512, 'Number of toy training problems.')
    difficulty_model: str = arg("", 'Offline filter (§6.2): keep rows with 1..15 correct of 16 for this model (empty: off).')
    code_upsample: int = arg(2, 'Code rows are listed this many times in the mix (released scripts: 2).')
    max_steps: int = arg(-1, "Steps to run in this stage (-1: the recipe's stage length).")
    steps: int = arg(0, 'Stage length from the recipe (set by the stage table).')
    seed: int = arg(0, "Seeds data order, sampling (per step and rank) and the trainer's RNG.")
    # --- rollout (§3.1, §3.2.4) -------------------------------------------------------
    # The report's notation (§4.1): D_R, D_T, N_reuse, G, T, tau. N_SGD = N_reuse * D_R / D_T
    # SGD steps per training step; §4.3 found on-policy (N_SGD = 1) slows entropy collapse.
    rollout_batch_size: int = arg(256, 'D_R: prompts per training step, over all ranks.')
    mini_batch_size: int = arg(256, 'D_T: prompts per SGD step. D_R == D_T and n_reuse == 1 is on-policy.')
    n_reuse: int = arg(1, 'N_reuse: passes over the rollout buffer. SGD steps per training step = N_reuse * D_R / D_T.')
    group_size: int = arg(16, 'G: responses sampled per prompt.')
    max_response_len: int = arg(16384, 'T: max new tokens per response in this stage.')
    temperature: float = arg(1.0, 'tau: sampling temperature; logits are divided by it in the loss too.')
    top_p: float = arg(1.0, 'Nucleus sampling (report: 1.0).')
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # the engine's settings: flags --rollout-<field>
    # --- loss (eq. 3.1) ---------------------------------------------------------------
    # Optimizer and clip as in the released scripts; the truncation, KL and aggregation
    # switches exist for the report's ablations (§3.2.3, §3.2.6, eq. 2.4).
    lr: float = arg(1e-6, 'AdamW learning rate, constant (report: 1e-6).')
    weight_decay: float = arg(0.01, 'AdamW weight decay (released scripts: 0.01).')
    grad_clip: float = arg(1.0, 'Global gradient-norm clip (released scripts: 1.0).')
    clip_low: float = arg(0.2, 'eps_low of the PPO clip.')
    clip_high: float = arg(0.2, 'eps_high; > clip_low is clip-higher (§4.5).')
    loss_agg: str = arg("token-mean", "token-mean (eq. 3.1) or seq-mean-token-mean (GRPO eq. 2.4 ablation).",
                        choices=("token-mean", "seq-mean-token-mean"))
    adv_mask: str = arg("none", "Truncation mask ablation (§3.2.3): none, before, after.", choices=("none", "before", "after"))
    rejection_sampling: bool = arg(True, 'Drop groups whose G rewards are all equal (§3.1); a batch left with none is not a step (released code).')
    max_skipped_batches: int = arg(20, 'Stop when this many rollout batches in a row had every group rejected.')
    max_nonfinite_steps: int = arg(3, 'Stop after this many steps in a row with a NaN/inf gradient norm (their optimizer steps are skipped).')
    truncated_reward: str = arg("zero", "A response cut at T: zero (report §3.2.3: reward 0, not graded) or grade (released code).",
                                choices=("zero", "grade"))
    kl_coef: float = arg(0.0, 'k3 KL to the initial policy (§3.2.6 ablation); 0 loads no reference model.')
    # --- entropy control (§3.2.5) ------------------------------------------------------
    # Defaults follow the released scripts (delta 1e-4, bounds [0, 0.005]); the report's
    # own setting is --entropy-delta 0.005 --entropy-coef-max inf (entropy_control.py).
    entropy_mode: str = arg("adaptive", "adaptive (MAGIC), fixed (constant entropy_coef, §4.5 ablation) or off.",
                            choices=("adaptive", "fixed", "off"))
    target_entropy: float = arg(0.2, 'tgt-ent of §3.2.5.')
    entropy_delta: float = arg(1e-4, 'Coefficient step; released code 1e-4, report 0.005.')
    entropy_coef_min: float = arg(0.0, 'Lower bound on the coefficient.')
    entropy_coef_max: float = arg(0.005, 'Upper bound on the coefficient; released code 0.005 (report: none, use inf).')
    entropy_coef: float = arg(0.0, 'The constant coefficient of entropy_mode=fixed.')
    # --- system ----------------------------------------------------------------------
    # How the update runs: precision, memory (memory_plan.py picks what "auto" means),
    # micro-batch and loss-head sizes, reward processes.
    param_dtype: str = arg("bfloat16", 'FSDP2 compute dtype (master weights and gradient reduction stay float32); '
                                       'auto: bfloat16 where it is native (a GPU, a CPU with AVX512-BF16 or AMX), else float32.')
    grad_checkpointing: str = arg("auto", "Recompute activations in backward: on, off, or auto (on where the memory plan needs it).",
                                  choices=("auto", "on", "off"))
    cpu_offload: bool = arg(False, 'FSDP2 CPU offload of parameters, gradients and optimizer state.')
    micro_batch_tokens: int = arg(16384, 'Real tokens per forward/backward micro-batch: sequences are packed end to end (packing.py); a longer one runs alone.')
    head_chunk_tokens: int = arg(1024, 'Positions per chunk of the loss head (loss.head_logprobs): its only [chunk, V] buffers.')
    reward_workers: int = arg(0, "Processes scoring rewards (0: in the trainer's main thread).")
    dist_timeout_min: float = arg(60.0, "Minutes a rank may wait in one collective (NCCL's default is 10): covers the "
                                        "slowest rank's rollout + grading (distributed.DEFAULT_TIMEOUT_MIN says why).")
    # --- checkpoints, logging, evaluation -----------------------------------------------
    # Resumable checkpoints, curves and logs, the held-out evaluation around a stage, and
    # the memory plan of --dry-run.
    save_every: int = arg(20, "Write a resumable checkpoint every K steps (0: only the stage's final model).")
    keep_checkpoints: int = arg(2, 'Resumable checkpoints kept per stage (older ones are deleted; 0: keep all).')
    preempt_grace_s: float = arg(300.0, "Seconds after a SIGTERM to reach the step's safe point and write a checkpoint "
                                 "before exiting without one (preemption.py). The 7B on 8 GPUs writes ~91 GB "
                                 "(fp32 weights + AdamW moments); set torchrun --shutdown-timeout above it.")
    resume: bool = arg(False, 'Continue this stage from its latest complete checkpoint (fresh start if none).')
    plot_every: int = arg(5, 'Redraw <output-dir>/curves.png every K steps (0: only at the end).')
    report_to: str = arg("none", "Also log metrics to tensorboard or wandb (rank 0; wandb offline unless WANDB_MODE is set).",
                         choices=("none", "tensorboard", "wandb"))
    eval_k: int = arg(0, 'avg@k before and after the stage with the colocated engine, via eval.py (0: off).')
    eval_benchmarks: str = arg("toy", 'eval.py --benchmarks for eval_k: "toy" is the toy task\'s held-out split.')
    eval_size: int = arg(128, 'Held-out problems of the toy benchmark for eval_k.')
    eval_temperature: float = arg(1.0, 'Sampling temperature of the before/after evaluation (report: 1.0).')
    dry_run: bool = arg(False, 'Print the resolved config, the stage table and the memory plan; load nothing; exit.')
    gpu_memory_gib: float = arg(0.0, "GPU memory the plan checks against (0: the device's own; on CPU the plan is only enforced when this is set).")
    gpus: int = arg(0, 'GPUs the --dry-run plan assumes (0: 8). A real run plans for its torchrun world size.')
    verbose: bool = arg(False, "Show vLLM's and transformers' INFO/WARNING lines (off: one line per step).")




# ------------------------------------------------------------------------------------
# The recipes (Tables 10-12) and the CPU demo
# ------------------------------------------------------------------------------------

# Shared by the three report recipes: the start model, the published data, and the
# released scripts' optimizer, clip, entropy target and prompt budget.
_7B_COMMON = dict(
    model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    data="Skywork/Skywork-OR1-RL-Data", data_splits="math,code",
    # The released data filter (or1_scripts/data_preprocess/download_and_filter_data_7b.py):
    # rows the start model solved 1..15 of 16 times; rows without a count are dropped.
    difficulty_model="DeepSeek-R1-Distill-Qwen-7B",
    lr=1e-6, weight_decay=0.01, grad_clip=1.0, clip_low=0.2, clip_high=0.2,
    target_entropy=0.2, temperature=1.0, kl_coef=0.0, rejection_sampling=True,
    param_dtype="bfloat16", rollout=dict(max_prompt_len=2048, dtype="bfloat16"),
)

RECIPES: dict[str, dict] = {
    # Skywork-OR1-7B: math + code, on-policy (Table 11). Where the released scripts differ
    # (or1_scripts/train/7b_{8k,16k,32k}.sh): every script uses D_R = D_T = 256 and
    # G = 16, the 32K one too (Table 11: 160 / 160 / 32 at stage 2), and there is an 8K
    # script before the 16K one. The recipe follows the report's table; the released
    # stage 2 is `--stage 2 --rollout-batch-size 256 --mini-batch-size 256 --group-size 16`.
    "or1-7b": dict(base=_7B_COMMON, stages={
        1: dict(steps=660, max_response_len=16384, rollout_batch_size=256, mini_batch_size=256, group_size=16),
        2: dict(steps=660, max_response_len=32768, rollout_batch_size=160, mini_batch_size=160, group_size=32),
    }),
    # Skywork-OR1-Math-7B: math only, 2 SGD steps per training step (Table 10). The
    # released code has no Math-7B script; stage 4 is the report's stage "3.5" (G = 64).
    "or1-math-7b": dict(base=dict(_7B_COMMON, data_splits="math", code_upsample=0), stages={
        1: dict(steps=740, max_response_len=8192, rollout_batch_size=256, mini_batch_size=128, group_size=16),
        2: dict(steps=1000, max_response_len=16384, rollout_batch_size=256, mini_batch_size=128, group_size=16),
        3: dict(steps=340, max_response_len=32768, rollout_batch_size=256, mini_batch_size=128, group_size=16),
        4: dict(steps=80, max_response_len=32768, rollout_batch_size=128, mini_batch_size=64, group_size=64),  # "3.5"
    }),
    # Skywork-OR1-32B: on-policy (Table 12); on 8 x 80 GB it does not fit (train.py
    # --dry-run says what to change). Released 32B scripts: vLLM tensor parallelism 2 (and sequence parallelism 2 at 32K,
    # not implemented here); the 32B difficulty counts.
    "or1-32b": dict(base=dict(_7B_COMMON, model="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
                              difficulty_model="DeepSeek-R1-Distill-Qwen-32B",
                              rollout=dict(max_prompt_len=2048, dtype="bfloat16", tensor_parallel_size=2)), stages={
        1: dict(steps=760, max_response_len=16384, rollout_batch_size=256, mini_batch_size=256, group_size=16),
        2: dict(steps=370, max_response_len=24576, rollout_batch_size=160, mini_batch_size=160, group_size=32),
    }),
    # The CPU demo: SmolLM2-135M-Instruct on 2-digit addition, 2 cores. Tuned for the
    # laptop, not the report: lr 2e-5 (20x the 7B's), 128-token responses, 20 steps
    # (~10 min on 2 cores; held-out avg@8 2.9% -> 68.2%, README).
    "tiny": dict(base=dict(
        model="embedded", data="toy", lr=2e-5, weight_decay=0.01, grad_clip=1.0,
        clip_low=0.2, clip_high=0.2, target_entropy=0.2, temperature=1.0, kl_coef=0.0,
        rejection_sampling=True, param_dtype="auto", micro_batch_tokens=2048,
        rollout=dict(max_prompt_len=256, dtype="auto", enforce_eager=True, cpu_kv_cache_gib=1.0),
        eval_k=8, eval_size=128, save_every=10, plot_every=2,
    ), stages={
        1: dict(steps=20, max_response_len=128, rollout_batch_size=16, mini_batch_size=16, group_size=8),
        2: dict(steps=20, max_response_len=256, rollout_batch_size=16, mini_batch_size=16, group_size=8),
    }),
}


def native_bf16() -> bool:
    """Whether bfloat16 runs natively here: on a GPU, or on a CPU with AVX512-BF16 or AMX.
    An AVX2-only CPU (this project's 2-core machine was an AMD EPYC of that kind on
    2026-12-02) has PyTorch emulate it, 20x and more slower than float32: the tiny
    recipe's "auto" dtypes then train and roll out in float32."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:  # not Linux: keep the recipe's bf16
        return True
    return " avx512_bf16" in flags or " amx_bf16" in flags


def stage_table(recipe: str) -> str:
    """The recipe's stages as a markdown table with cumulative step ranges."""
    rows = ["| stage | steps | T | D_R | D_T | G |", "|---|---|---|---|---|---|"]
    start = 0
    for s, st in sorted(RECIPES[recipe]["stages"].items()):
        end = start + st["steps"]
        T = st["max_response_len"]
        rows.append(f"| {s} | {start}-{end} | {T // 1024}K | {st['rollout_batch_size']} | {st['mini_batch_size']} | {st['group_size']} |"
                    if T >= 1024 else f"| {s} | {start}-{end} | {T} | {st['rollout_batch_size']} | {st['mini_batch_size']} | {st['group_size']} |")
        start = end
    return "\n".join(rows)


# ------------------------------------------------------------------------------------
# The command line: one flag per field
# ------------------------------------------------------------------------------------


def _flags():
    """(flag, dataclass field, owner) for every settable field: Config's own, then the
    engine's as --rollout-<field> (max_model_len and seed are derived, not flags)."""
    # Config's own fields first (their order is --help's), then the engine's.
    for f in fields(Config):
        if f.name != "rollout":
            yield "--" + f.name.replace("_", "-"), f, None
    for f in fields(RolloutConfig):
        if f.name not in DERIVED:
            yield "--rollout-" + f.name.replace("_", "-"), f, "rollout"


def _apply(cfg: Config, overrides: dict) -> None:
    """Set fields from a recipe dict ("rollout" holds a dict for the engine)."""
    # Recipes are plain dicts: "rollout" is the one nested key.
    for k, v in overrides.items():
        if k == "rollout":
            for kk, vv in v.items():
                setattr(cfg.rollout, kk, vv)
        else:
            setattr(cfg, k, v)


def parse_config(argv: list[str] | None = None) -> Config:
    """Config() defaults <- recipe base <- recipe stage row <- command-line flags."""
    p = argparse.ArgumentParser(description="MAGIC trainer (Skywork-OR1 report §3.1): torchrun + FSDP2 + vLLM")
    as_bool = lambda s: s.lower() in ("1", "true", "yes", "on")  # noqa: E731  --flag, --flag true, --flag false
    for flag, f, _ in _flags():
        kind = {"bool": as_bool, "int": int, "float": float}.get(str(f.type), str)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        extra = dict(nargs="?", const=True) if kind is as_bool else {}
        p.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), **extra,
                       help=f"{f.metadata['help']} (default {default})".replace("%", "%%"))
    args = vars(p.parse_args(argv))
    # The recipe and stage pick the rows below; every flag given then overrides them.
    recipe, stage = args["recipe"] or Config.recipe, args["stage"] or 1
    if recipe not in RECIPES:
        p.error(f"--recipe {recipe!r} is not one of {sorted(RECIPES)}")
    if stage not in RECIPES[recipe]["stages"]:
        p.error(f"--stage {stage}: recipe {recipe} has stages {sorted(RECIPES[recipe]['stages'])}")
    cfg = Config(recipe=recipe, stage=stage)
    _apply(cfg, RECIPES[recipe]["base"])
    _apply(cfg, RECIPES[recipe]["stages"][stage])
    # Flags override recipes; None means "not given" (every flag defaults to None).
    for flag, f, owner in _flags():
        value = args[flag[2:].replace("-", "_")]
        if value is not None:
            setattr(cfg.rollout if owner else cfg, f.name, value)
    # One folder per recipe unless told otherwise: stages of a run share it.
    cfg.output_dir = cfg.output_dir or f"runs/{recipe}"
    for flag, f, owner in _flags():  # a recipe's values must be allowed ones too
        value, allowed = getattr(cfg.rollout if owner else cfg, f.name), f.metadata.get("choices")
        if allowed and value not in allowed:
            p.error(f"{flag} must be one of {allowed}, got {value!r}")
    # "auto" dtypes (the tiny recipe's): bf16 only where this machine computes it natively.
    for owner, name in ((cfg, "param_dtype"), (cfg.rollout, "dtype")):
        if getattr(owner, name) == "auto":
            setattr(owner, name, "bfloat16" if native_bf16() else "float32")
    # D_R must split into whole mini-batches of D_T prompts.
    if cfg.rollout_batch_size % cfg.mini_batch_size:
        p.error(f"--rollout-batch-size {cfg.rollout_batch_size} must be a multiple of --mini-batch-size {cfg.mini_batch_size}")
    return cfg
