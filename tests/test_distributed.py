"""What a multi-GPU, multi-node run relies on, checked with torchrun on this machine:
the collective timeout as a setting, and several nodes without a shared home
(distributed.py; train.py's start)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, torchrun


@pytest.mark.parametrize("minutes,wait_s,ok", [("0.05", "12", False), ("2", "3", True)], ids=["3s-times-out", "2min-waits"])
def test_the_timeout_setting_reaches_the_process_group(minutes, wait_s, ok, tmp_path):
    """--dist-timeout-min is the default group's timeout: rank 1 arrives WAIT_S late at an
    all_reduce; with a 3 s timeout rank 0 gives up after about 3 s (not torch's 30 min gloo
    default, not the 12 s it would take to wait), with 2 min it waits and succeeds."""
    torchrun(["tests/dist_timeout_check.py", str(tmp_path), minutes, wait_s], timeout=300)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    assert r0["ok"] == ok, r0
    if ok:
        assert r0["waited_s"] >= 2.0, r0  # it really waited for rank 1
    else:
        assert 2.0 <= r0["waited_s"] < 11.0 and "timed out" in r0["error"].lower(), r0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args_a: list[str], args_b: list[str], homes: tuple[Path, Path], timeout: int = 1200):
    """`torchrun --nnodes 2 --nproc_per_node 1` twice on this machine, as two hosts would run
    it: c10d rendezvous on 127.0.0.1, each "node" with its own HOME (so its own
    ~/.cache) and no MAGIC_CACHE. Returns both CompletedProcesses."""
    port, procs = _free_port(), []
    for args, home in zip((args_a, args_b), homes):
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "MAGIC_CACHE"}
        env.update(HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "magic-test", *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return outs


def _tiny_smollm2(out: Path) -> list[str]:
    """The embedded model (converted by each node into its own cache) on a few sums."""
    return ["train.py", "--recipe", "tiny", "--model", "embedded", "--output-dir", str(out), "--toy-size", "16",
            "--rollout-batch-size", "2", "--mini-batch-size", "2", "--group-size", "2", "--max-response-len", "16",
            "--rejection-sampling", "false", "--eval-k", "0", "--save-every", "1", "--plot-every", "0"]


@pytest.mark.slow
def test_two_nodes_without_a_shared_home_train_checkpoint_and_resume(tmp_path):
    """Two "nodes" (two torchrun agents, one rank each) with private home folders and one
    shared output folder: each node converts the embedded model into its own cache, the
    stage checkpoints, and --resume on both continues from it."""
    out, homes = tmp_path / "shared-run", (tmp_path / "hostA", tmp_path / "hostB")
    a, b = two_nodes(_tiny_smollm2(out) + ["--max-steps", "2"], _tiny_smollm2(out) + ["--max-steps", "2"], homes)
    assert a.returncode == 0 and b.returncode == 0, (a.stdout[-3000:], a.stderr[-3000:], b.stderr[-3000:])
    for home in homes:  # node-local preparation: each node has its own converted copy
        assert (home / ".cache" / "magic-or1" / "smollm2-135m-instruct" / "model.safetensors").exists(), home
    assert "world=2" in a.stdout + b.stdout
    ckpts = sorted(p.name for p in (out / "stage1" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000001"], ckpts  # step 2 is the stage's end: the final folder
    assert (out / "stage1" / "final" / "config.json").exists()
    # resume on both nodes: a longer stage continues from step 1's checkpoint
    final = out / "stage1" / "final"
    a, b = two_nodes(_tiny_smollm2(out) + ["--max-steps", "3", "--resume"],
                     _tiny_smollm2(out) + ["--max-steps", "3", "--resume"], homes)
    assert a.returncode == 0 and b.returncode == 0, (a.stdout[-3000:], a.stderr[-3000:], b.stderr[-3000:])
    assert "resumed from" in a.stdout + b.stdout and "step_00000001" in a.stdout + b.stdout
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3], steps  # step 1 from the first run, 2 and 3 redone after the resume
    assert final.exists()


def test_two_nodes_with_different_output_folders_are_refused(tmp_path):
    """The same job where each node was given its own (node-local) folder: both nodes stop
    at start with a message that names --output-dir, before any model is touched."""
    homes = (tmp_path / "hostA", tmp_path / "hostB")
    common = ["train.py", "--recipe", "tiny", "--model", str(tmp_path / "never-read"), "--eval-k", "0"]
    a, b = two_nodes(common + ["--output-dir", str(tmp_path / "diskA" / "run")],
                     common + ["--output-dir", str(tmp_path / "diskB" / "run")], homes, timeout=300)
    assert a.returncode != 0 and b.returncode != 0
    for p in (a, b):
        assert "is not one folder that every node sees" in p.stdout + p.stderr, p.stderr[-3000:]
        assert "--output-dir" in p.stdout + p.stderr
    assert not list((tmp_path / "diskA" / "run").glob(".nodes-*")) and not list((tmp_path / "diskB" / "run").glob(".nodes-*"))
