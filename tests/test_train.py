"""train.py end to end under torchrun (2 gloo ranks, real vLLM, real Math-Verify)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, cpu_has_native_bf16, torchrun

# The tiny recipe's dtypes are "auto": bf16 where the CPU has it natively, float32 where
# PyTorch would emulate it (AVX2 only: 20x and more slower, past CI's time). Everything
# these runs check is dtype-independent.

KEYS = {"step", "stage", "reward_mean", "loss", "reward_errors", "rollout_digest", "kept_group_frac", "entropy", "entropy_full", "entropy_coef",
        "trunc_ratio", "acc_non_truncated", "response_len_mean", "response_len_max", "clip_frac_low",
        "clip_frac_high", "grad_norm", "lr", "tokens", "t_rollout", "t_update", "t_other"}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_stages_then_eval(boxed_model, small_sum_jsonl, tmp_path):
    out = tmp_path / "run"
    common = ["train.py", "--recipe", "tiny", "--model", boxed_model, "--data", small_sum_jsonl,
              "--output-dir", str(out), "--rollout-batch-size", "8", "--mini-batch-size", "4",
              "--group-size", "4", "--max-response-len", "24", "--eval-k", "0"]
    # Stage 1 also evaluates held-out avg@2 before and after (eval.py with the colocated engine).
    p1 = torchrun(common + ["--max-steps", "2", "--entropy-mode", "fixed", "--entropy-coef", "0.001",
                            "--eval-k", "2", "--eval-benchmarks", small_sum_jsonl])
    assert "held-out sums before training: avg@2" in p1.stdout and "held-out sums after training: avg@2" in p1.stdout
    for tag in ("before", "after"):
        lines = (out / "stage1" / f"eval_{tag}" / "sums.jsonl").read_text().splitlines()
        assert len(lines) == 16 and all(len(json.loads(l)["correct"]) == 2 for l in lines)
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2]
    assert KEYS <= set(m[0])
    assert any(r["kept_group_frac"] > 0 and r["sgd_steps"] == 2 for r in m), "no update ran (D_R/D_T = 2 SGD steps)"
    assert all(0 <= r["reward_mean"] <= 1 for r in m)
    final = out / "stage1" / "final"
    assert (final / "config.json").exists() and (final / "model.safetensors").exists()
    stats = json.loads((out / "stage1" / "prompt_stats.json").read_text())
    assert sum(stats["seen"].values()) == 2 * 8 * 4  # every response counted, before rejection

    p2 = torchrun(common + ["--stage", "2", "--max-steps", "1"])
    assert "online filtering: dropped" in p2.stdout
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]  # the step count continues

    ev = subprocess.run([sys.executable, "eval.py", "--model", str(out / "stage2" / "final"), "--benchmarks",
                         small_sum_jsonl, "--k", "4", "--max-tokens", "16", "--enforce-eager", "--out", str(tmp_path / "ev")],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    lines = [json.loads(l) for l in (tmp_path / "ev" / "sums.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and all(len(l["correct"]) == 4 for l in lines)
    assert "| sums | 16 | 4 |" in (tmp_path / "ev" / "summary.md").read_text()


def test_dry_run_prints_table_11():
    p = subprocess.run([sys.executable, "train.py", "--stage", "1", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "| 1 | 0-660 | 16K | 256 | 256 | 16 |" in p.stdout and "| 2 | 660-1320 | 32K | 160 | 160 | 32 |" in p.stdout


def test_bad_flag_is_named():
    p = subprocess.run([sys.executable, "train.py", "--adv-mask", "sideways", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "--adv-mask" in p.stderr


@pytest.mark.slow
def test_readme_demo_two_steps_on_smollm2(smollm2, tmp_path):
    """The README's command on the real embedded SmolLM2-135M-Instruct (2 steps), and its
    quiet console: the start and end summaries, one line per step, the progress bar --
    no vLLM or transformers INFO/WARNING line, nothing else. The recipe's dtypes are
    "auto": bf16 where this CPU has it natively, float32 otherwise (said on the start line)."""
    out = tmp_path / "demo"
    p = torchrun(["train.py", "--recipe", "tiny", "--max-steps", "2", "--output-dir", str(out), "--eval-k", "0"], timeout=1500)
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2] and KEYS <= set(m[0])
    want = "bfloat16/bfloat16" if cpu_has_native_bf16() else "float32/float32"
    assert f"dtype={want} (update/rollout)" in p.stdout, p.stdout[:2000]
    lines = [l.strip() for l in (p.stdout + p.stderr).replace("\r", "\n").splitlines() if l.strip()]
    lines = [l for l in lines if "torch/distributed/run.py" not in l]  # torchrun's own OMP_NUM_THREADS banner
    assert sum(l.startswith("[s1 ") for l in lines) == 2
    noise = [l for l in lines if not l.startswith(("[magic]", "[data]", "[s1 ", "stage 1:"))]
    assert not noise, noise[:10]


def test_tensor_parallel_group_of_two_cpu_ranks(boxed_model, small_sum_jsonl, tmp_path):
    """--tensor-parallel-size 2: both ranks form one vLLM TP group (same prompts, same
    seed), then split the group's samples for the FSDP2 update."""
    out = tmp_path / "tp"
    torchrun(["train.py", "--recipe", "tiny", "--model", boxed_model, "--data", small_sum_jsonl,
              "--output-dir", str(out), "--rollout-batch-size", "4", "--mini-batch-size", "4",
              "--group-size", "4", "--max-response-len", "16", "--max-steps", "1", "--rollout-tensor-parallel-size", "2",
              "--eval-k", "0"])
    m = _metrics(out)
    assert len(m) == 1 and KEYS <= set(m[0])
    stats = json.loads((out / "stage1" / "prompt_stats.json").read_text())
    # 4 prompts x 4 samples, each counted once although both ranks generated them
    assert sum(stats["seen"].values()) == 16


def _common(model, data, out) -> list[str]:
    return ["train.py", "--recipe", "tiny", "--model", model, "--data", data, "--output-dir", str(out),
            "--rollout-batch-size", "8", "--mini-batch-size", "4", "--group-size", "4", "--max-response-len", "24",
            "--eval-k", "0"]


def _no_timing(m: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("t_") and not k.endswith("_peak_gib")} for r in m]  # measured, not computed


def test_kill_9_then_resume_equals_uninterrupted(boxed_model, small_sum_jsonl, tmp_path):
    """kill -9 the whole torchrun job at a random step, --resume: the run continues from
    its last complete checkpoint and, on CPU with fixed seeds, every non-timing metric
    equals the uninterrupted run's."""
    import os
    import random
    import signal
    import time

    from conftest import torchrun_cmd

    args = ["--max-steps", "4", "--save-every", "1", "--plot-every", "2", "--entropy-mode", "adaptive",
            "--target-entropy", "5.0", "--entropy-delta", "0.002"]  # the coefficient moves: its state must resume
    ref = tmp_path / "ref"
    torchrun(_common(boxed_model, small_sum_jsonl, ref) + args)
    run = tmp_path / "run"
    kill_after = random.randint(1, 3)  # metric lines seen before the kill
    proc = subprocess.Popen(torchrun_cmd(_common(boxed_model, small_sum_jsonl, run) + args), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= kill_after:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, every process of the job
    proc.wait()
    ckpts = sorted(p.name for p in (run / "stage1" / "checkpoints").glob("step_*"))
    p = torchrun(_common(boxed_model, small_sum_jsonl, run) + args + ["--resume"])
    assert "resumed from" in p.stdout or "no loadable checkpoint" in p.stdout, p.stdout[-2000:]
    m_ref, m_run = _no_timing(_metrics(ref)), _no_timing(_metrics(run))
    assert [r["step"] for r in m_run] == [1, 2, 3, 4], f"killed after {kill_after} lines, checkpoints {ckpts}"
    assert m_run == m_ref, f"killed after {kill_after} lines, checkpoints then: {ckpts}"
    assert len({r["entropy_coef"] for r in m_ref}) > 1  # the controller state really mattered
    assert (run / "curves.png").stat().st_size > 10_000  # the PNG curves are drawn


def test_incomplete_checkpoint_is_ignored(tmp_path):
    """A crash mid-write leaves step_<k>.tmp (or a folder without meta.json): never picked."""
    from checkpoint import latest_checkpoint

    root = tmp_path / "checkpoints"
    (root / "step_00000002").mkdir(parents=True)
    (root / "step_00000002" / "meta.json").write_text("{}")
    (root / "step_00000003.tmp").mkdir()  # being written when the machine died
    (root / "step_00000004").mkdir()  # no meta.json: not complete
    assert latest_checkpoint(root).name == "step_00000002"
    assert latest_checkpoint(tmp_path / "none") is None


# Every ablation flag of §3-§5, each for one step. Flags that do not conflict share a
# run (a run is ~20 s of start-up); each run checks that its flags took effect.
ABLATIONS = {
    "reuse-clip-higher-seqmean-mask-before": (
        ["--n-reuse", "2", "--mini-batch-size", "4", "--clip-high", "0.28", "--loss-agg", "seq-mean-token-mean",
         "--adv-mask", "before", "--temperature", "0.6"],
        lambda r: r["sgd_steps"] == 4 or r["kept_group_frac"] == 0),  # N_reuse x D_R/D_T = 2 x 2
    "fixed-entropy-kl-mask-after": (
        ["--entropy-mode", "fixed", "--entropy-coef", "0.003", "--kl-coef", "0.01", "--adv-mask", "after",
         "--group-size", "2", "--rollout-batch-size", "4", "--mini-batch-size", "4"],
        lambda r: r["entropy_coef"] == 0.003 and "kl_ref" in r),
    "adaptive-report-delta-no-rejection": (
        ["--entropy-mode", "adaptive", "--entropy-delta", "0.005", "--entropy-coef-max", "inf",
         "--target-entropy", "5.0", "--rejection-sampling", "false"],
        lambda r: r["next_entropy_coef"] == 0.005 and r["kept_group_frac"] == 1.0),
    "entropy-off-on-policy": (
        ["--entropy-mode", "off", "--mini-batch-size", "8", "--top-p", "0.9"],
        lambda r: r["entropy_coef"] == 0.0 and r["sgd_steps"] in (0, 1)),
    # FSDP2 CPU offload (a gloo group on CPU; "cpu:gloo,cuda:nccl" on GPUs), checkpointing on,
    # a loss-head chunk of 8 positions, truncated responses graded as the released code does:
    # 9 tokens hold "The answer is \boxed{N}" but not the EOS after it, so every response is
    # cut (finish reason "length") and still scores when graded.
    "cpu-offload-ckpt-small-chunks-grade-truncated": (
        ["--cpu-offload", "--grad-checkpointing", "on", "--head-chunk-tokens", "8", "--micro-batch-tokens", "64",
         "--truncated-reward", "grade", "--rejection-sampling", "false", "--max-response-len", "9"],
        lambda r: r["sgd_steps"] == 2 and r["tokens"] > 0 and r["trunc_ratio"] == 1.0 and r["reward_mean"] > 0),
    # The default (report §3.2.3): the same cut responses score 0 without being graded.
    "truncated-score-zero": (
        ["--rejection-sampling", "false", "--max-response-len", "9"],
        lambda r: r["trunc_ratio"] == 1.0 and r["reward_mean"] == 0.0),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_flag_runs_one_step(name, boxed_model, small_sum_jsonl, tmp_path):
    flags, check = ABLATIONS[name]
    out = tmp_path / name
    torchrun(_common(boxed_model, small_sum_jsonl, out) + ["--max-steps", "1"] + flags, nproc=1)
    m = _metrics(out)
    assert len(m) == 1 and KEYS <= set(m[0])
    assert check(m[0]), m[0]


@pytest.mark.parametrize("G,extra", [(4, []), (1, ["--kl-coef", "0.01"])], ids=["G4", "G1-kl"])
def test_a_rank_with_only_over_long_prompts_finishes(G, extra, boxed_model, tmp_path):
    """2 ranks, D_R = 2: every step one rank receives the over-long prompt, which the
    engine drops, and has nothing to roll out, score or train on. It must neither crash
    (empty reward tensors) nor hang the other rank in a collective. With G = 1 the other
    rank's single sequence cannot be shared either: the first rank has no sequence to
    train on at all, with the KL reference model on (its empty log-prob list once read as
    "no reference" there and broke the metrics)."""
    import conftest

    short = conftest.small_sum_rows(1)[0]
    long = json.loads(json.dumps(short))
    long["prompt"][0]["content"] = "Please read carefully. " * 60 + long["prompt"][0]["content"]
    data = tmp_path / "one_long.jsonl"
    data.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    out = tmp_path / "run"
    torchrun(["train.py", "--recipe", "tiny", "--model", boxed_model, "--data", str(data), "--output-dir", str(out),
              "--rollout-batch-size", "2", "--mini-batch-size", "2", "--group-size", str(G), "--max-response-len", "16",
              "--rollout-max-prompt-len", "64", "--max-steps", "2", "--rejection-sampling", "false", "--eval-k", "0", *extra],
             timeout=900)
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2]
    assert all(("kl_ref" in r) == bool(extra) for r in m)
    stats = json.loads((out / "stage1" / "prompt_stats.json").read_text())
    assert stats["seen"] == {"0": 2 * G}  # only the short prompt was sampled, G per step


def test_a_batch_whose_groups_are_all_rejected_is_not_a_step(boxed_model, small_sum_jsonl, tmp_path):
    """As in the released trainer, a rollout batch with no group left after rejection
    sampling is skipped: no update, no step counted, nothing logged. G = 1 makes every
    group all-equal, so every batch is skipped and the run stops after
    --max-skipped-batches of them, saying why."""
    from conftest import torchrun_cmd

    out = tmp_path / "run"
    cmd = torchrun_cmd(_common(boxed_model, small_sum_jsonl, out)[:-2] + [
        "--group-size", "1", "--max-steps", "2", "--max-skipped-batches", "3", "--eval-k", "0"], nproc=2)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode != 0
    assert p.stdout.count("every group rejected (all-equal rewards); not a step") == 3, p.stdout[-2000:]
    assert "3 rollout batches in a row had every group rejected" in p.stdout + p.stderr
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()


def _wandb_history(run_file) -> list[dict]:
    """The history rows of an offline wandb run file (<run>.wandb: a LevelDB-style log of
    32 KiB blocks after a 7-byte header; records are CRC32C, length, type, protobuf)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, rows = Path(run_file).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if n == 0 and kind == 0:  # the padding at the end of a block
            pos += left
            continue
        chunk, pos = data[pos + 7: pos + 7 + n], pos + 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end it
            rec = pb.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


@pytest.mark.parametrize("report_to", ["tensorboard", "wandb"])
def test_report_to_writes_the_step_metrics(report_to, boxed_model, small_sum_jsonl, tmp_path):
    """--report-to tensorboard / wandb (offline) for real: the event file / the offline run
    hold every step's metrics, equal to metrics.jsonl."""
    out = tmp_path / report_to
    torchrun(_common(boxed_model, small_sum_jsonl, out) + ["--max-steps", "2", "--report-to", report_to], nproc=1)
    m = _metrics(out)
    if report_to == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ev = EventAccumulator(str(out / "tensorboard"))
        ev.Reload()
        got = {(k, e.step): e.value for k in ev.Tags()["scalars"] for e in ev.Scalars(k)}
    else:
        (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
        got = {(k, row["_step"]): v for row in _wandb_history(run_file) for k, v in row.items()}
    for rec in m:
        for key in ("reward_mean", "entropy", "tokens", "kept_group_frac"):
            assert got[(key, rec["step"])] == pytest.approx(rec[key], rel=1e-6), (key, rec["step"])


def test_a_checkpoint_loads_only_while_the_engine_sleeps(tiny_model, tmp_path):
    """--resume's load creates the AdamW state (DCP's _init_optim_state: zeroed gradients,
    both moments, a sqrt temporary; ~14 GiB per GPU for the 7B on 8), which an awake vLLM
    would leave no room for. train.start_stage puts the engine to sleep first, and
    resume_or_start_fresh refuses to load otherwise (a real engine, a one-rank group, in
    a child process so that this pytest process never joins a group)."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT)!r})
import distributed, train
from recipes import parse_config
from rollout import HFEngine, RolloutConfig
cfg = parse_config(["--recipe", "tiny", "--resume", "--output-dir", {str(tmp_path)!r}])
distributed.join()
ckpt = train.Path({str(tmp_path)!r}) / "stage1" / "checkpoints" / "step_00000001"
import torch.distributed.checkpoint as dcp
dcp.save({{"x": torch.zeros(4)}}, checkpoint_id=str(ckpt))  # intact files: newest_loadable picks it
torch.save({{}}, ckpt / "rank0.pt")
(ckpt / "meta.json").write_text('{{"world_size": 1}}')
run = train.Run(cfg, 0, 1, torch.device("cpu"), ckpt.parents[2], ckpt.parents[1], [], [], [], 0, 1, 0, 1, 0)
run.engine = HFEngine({tiny_model!r}, RolloutConfig(backend="hf", dtype="float32", max_model_len=256, max_prompt_len=64))
try:
    train.resume_or_start_fresh(run)
except RuntimeError as e:
    print("refused:", e)
run.engine.sleep()
try:
    train.resume_or_start_fresh(run)  # asleep: it goes on to load (this run has no model to load into)
except RuntimeError as e:
    print("refused again:", e)
except Exception as e:
    print("loading:", type(e).__name__)
"""
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "refused: load_checkpoint needs the rollout engine asleep" in p.stdout, p.stdout + p.stderr[-3000:]
    assert "loading:" in p.stdout and "refused again" not in p.stdout, p.stdout + p.stderr[-3000:]


def _small_checkpoint(folder: Path, world: int = 1) -> Path:
    """A checkpoint folder as save_checkpoint lays it out (DCP shards + .metadata, one
    rank file per rank, meta.json), written by this single process."""
    import torch
    import torch.distributed.checkpoint as dcp

    dcp.save({"model": {"w": torch.arange(4096.0)}, "optim": {"m": torch.ones(512)}}, checkpoint_id=str(folder), no_dist=True)
    for r in range(world):
        torch.save({"rng": [r] * 100}, folder / f"rank{r}.pt")
    (folder / "meta.json").write_text(json.dumps({"world_size": world, "done": int(folder.name.split("_")[1])}))
    return folder


@pytest.mark.parametrize("fault", ["truncated shard", "missing rank file", "bad json", "torn rank file", "no metadata"])
def test_an_unreadable_newest_checkpoint_is_skipped_with_its_reason(fault, tmp_path):
    """checkpoint.newest_loadable judges from the files alone, before any rank loads: each
    fault in the newest checkpoint is named, and the previous one is chosen."""
    from checkpoint import newest_loadable, why_unreadable

    root = tmp_path / "checkpoints"
    old, new = _small_checkpoint(root / "step_00000001"), _small_checkpoint(root / "step_00000002", world=2)
    assert why_unreadable(new) is None and newest_loadable(root) == (new, [])
    shard = next(new.glob("*.distcp"))
    if fault == "truncated shard":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        want = f"shard {shard.name} truncated"
    elif fault == "missing rank file":
        (new / "rank1.pt").unlink()
        want = "rank1.pt missing (written by 2 ranks)"
    elif fault == "bad json":
        (new / "meta.json").write_text('{"world_size": 2, "done"')
        want = "meta.json unreadable"
    elif fault == "torn rank file":
        data = (new / "rank0.pt").read_bytes()
        (new / "rank0.pt").write_bytes(data[: len(data) - 40])
        want = "rank0.pt unreadable"
    else:
        (new / ".metadata").unlink()
        want = "DCP .metadata unreadable"
    got, skipped = newest_loadable(root)
    assert got == old and [p for p, _ in skipped] == [new], skipped
    assert skipped[0][1].startswith(want), skipped


def test_resume_falls_back_past_a_truncated_newest_checkpoint(boxed_model, small_sum_jsonl, tmp_path):
    """train.py --resume on 2 ranks with a truncated shard in the newest checkpoint: it
    says which and why, resumes from the one before, and finishes the stage."""
    out = tmp_path / "run"
    args = _common(boxed_model, small_sum_jsonl, out) + ["--save-every", "1", "--plot-every", "0"]
    torchrun(args + ["--max-steps", "3"])
    root = out / "stage1" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000001", "step_00000002"]
    shard = sorted((root / "step_00000002").glob("*.distcp"))[-1]
    shard.write_bytes(shard.read_bytes()[:1000])
    p = torchrun(args + ["--max-steps", "3", "--resume"])
    assert f"skipping {root / 'step_00000002'}: shard {shard.name} truncated: 1,000 of" in p.stdout, p.stdout[-3000:]
    assert f"resumed from {root / 'step_00000001'} after 1 steps" in p.stdout, p.stdout[-3000:]
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(boxed_model, small_sum_jsonl, tmp_path):
    """A real non-finite loss, no hook: at --temperature 1e-40 vLLM samples greedily (below
    its 1e-5 threshold) while the trainer's logits / 1e-40 overflow float32 to inf and
    log-softmax gives NaN. Every SGD step's gradient norm is NaN: no optimizer step is
    taken, each step is counted in metrics.jsonl and on the console line, and after
    --max-nonfinite-steps 2 such steps in a row the run stops, saying why."""
    from conftest import torchrun_cmd

    out = tmp_path / "run"
    cmd = torchrun_cmd(_common(boxed_model, small_sum_jsonl, out) + [
        "--temperature", "1e-40", "--rejection-sampling", "false", "--max-steps", "4", "--max-nonfinite-steps", "2"], nproc=1)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode != 0
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2], p.stdout[-3000:]
    assert all(r["nonfinite_sgd_steps"] == 2 and r["sgd_steps"] == 0 for r in m), m  # D_R / D_T = 2 SGD steps, both skipped
    assert p.stdout.count("NON-FINITE 2 skipped") + p.stderr.count("NON-FINITE 2 skipped") == 2
    assert "2 training steps in a row had a non-finite (NaN/inf) loss or gradient norm" in p.stdout + p.stderr
