"""gpu_check.py: its --cpu mode end to end (the GPU check's code on gloo and tiny sizes,
so the command still works the day a GPU is lent), how it reports a failing check, and
the finder that hides vLLM and datasets from train.py as the GPU image lacks them."""

import doctest
import json
import os
import subprocess
import sys

from conftest import ROOT

import gpu_check


def test_cpu_mode_passes_every_check_and_writes_the_report(tmp_path):
    """`python gpu_check.py --cpu`: every check passes, with the figures the criteria
    name -- float32 within 1e-4 and bf16 within 3e-2 of float64, train.py's resumed step
    bit-identical to the uninterrupted one, an exact weight sync -- in gpu_check.json
    and gpu_check.md. About 2 minutes on 2 cores."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    p = subprocess.run([sys.executable, "gpu_check.py", "--cpu", "--out", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-8000:] + p.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in rep["checks"]}
    assert rep["mode"] == "cpu" and rep["passed"] and len(checks) == 6, [c["figure"] for c in rep["checks"]]
    details = {name: dict(c["details"]) for name, c in checks.items()}
    # The process group: gloo here, FSDP2 computing in bf16 over float32 shards.
    pg = details["process group + FSDP2 mixed precision"]
    assert pg["backend"] == "gloo" and pg["FSDP2 reduce_dtype"] == "torch.float32"
    assert pg["layer input / weight / output dtype in forward"].startswith("torch.bfloat16 / torch.bfloat16")
    # The loss head: four relative errors per row, each within its dtype's tolerance.
    head = details["chunked vs full-logit loss head"]
    for key, tol in (("float32: chunked vs float64 (log p, entropy, grad hidden, grad weight)", 1e-4),
                     ("bfloat16: chunked vs float64 (log p, entropy, grad hidden, grad weight)", 3e-2)):
        errs = [float(e) for e in head[key].split(", ")]
        assert len(errs) == 4 and max(errs) <= tol, (key, errs)
    # train.py: a checkpoint after step 1, and the resumed step 2 equal to the first one.
    train = details["train.py: 2 steps, checkpoint, resume"]
    assert train["checkpoints after run 1"] == "['step_00000001']"
    assert float(train["resumed step 2 vs first step 2, max |diff| of non-timing metrics"]) == 0.0
    sync = details["weight sync + generation (transformers engine)"]
    assert float(sync["max |engine - trainer| after sync"]) == 0.0
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# gpu_check (cpu): all checks passed") and md.count("| pass |") == 6


def test_a_failing_check_is_reported_and_the_rest_still_run(tmp_path):
    """An exception is a failed check (with its traceback in the report), the checks
    after it run, and the report says FAILED: main() then exits 1."""
    def broken():
        raise RuntimeError("CUDA error: out of memory")

    results = gpu_check.run_checks([("broken", broken), ("fine", lambda: (True, "42 tokens/s", "runs", [("x", 1)]))], 0.0)
    assert [r["passed"] for r in results] == [False, True]
    assert "RuntimeError: CUDA error: out of memory" in results[0]["figure"]
    assert "Traceback" in results[0]["details"][0][1]
    assert gpu_check.write_report(tmp_path, "gpu", "test machine", results, 1.0) is False
    md = (tmp_path / "gpu_check.md").read_text()
    assert "FAILED" in md and "| broken | **FAIL** |" in md and "| fine | pass | 42 tokens/s |" in md
    assert json.loads((tmp_path / "gpu_check.json").read_text())["passed"] is False


def test_train_py_runs_with_vllm_and_datasets_hidden(tmp_path):
    """The wrapper gpu_check launches train.py through: vLLM and datasets are not found
    (find_spec says so, an import raises ModuleNotFoundError), everything else is."""
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib.util, sys\n"
                     "print(sys.argv[1:], importlib.util.find_spec('vllm'), importlib.util.find_spec('datasets'))\n"
                     "try:\n    import datasets\nexcept ModuleNotFoundError as e:\n    print('hidden:', e.name)\n"
                     "import json, torch\nprint('torch', torch.__version__)\n")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(gpu_check._HIDDEN_RUN.format(root=str(ROOT), train=str(probe)))
    p = subprocess.run([sys.executable, str(wrapper), "--flag"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "['--flag'] None None" and lines[1] == "hidden: datasets" and lines[2].startswith("torch 2.")


def test_docstring_examples():
    """update_flops' worked example (model FLOPs of one SGD step)."""
    res = doctest.testmod(gpu_check, verbose=False)
    assert res.attempted > 0 and res.failed == 0
