"""eval.py: metrics by hand, each benchmark's published schema, resume, data parallel."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, torchrun

FIX = Path(__file__).parent / "fixtures"


def test_avg_and_pass_at_k_by_hand():
    from eval import avg_at_k, pass_at_k

    c = [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert avg_at_k(c) == pytest.approx((0.5 + 0 + 1) / 3)
    # pass@1 is avg@k; pass@2 with 2 of 4 correct: 1 - C(2,2)/C(4,2) = 5/6
    assert pass_at_k(c, 1) == pytest.approx(avg_at_k(c))
    assert pass_at_k(c, 2) == pytest.approx((5 / 6 + 0 + 1) / 3)
    # pass@3 with 1 of 4 correct: 1 - C(3,3)/C(4,3) = 3/4; pass@4 = any correct
    assert pass_at_k([[0, 1, 0, 0]], 3) == pytest.approx(0.75)
    assert pass_at_k(c, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pass@5"):
        pass_at_k(c, 5)


def test_aime_schemas_become_math_rows():
    from eval import MATH_INSTRUCTION, load_benchmark
    from rewards import reward_for_row

    name, rows = load_benchmark(f"aime24={FIX / 'aime24.jsonl'}")
    assert name == "aime24" and [r["extra_info"]["index"] for r in rows] == [60, 61, 62]
    assert rows[0]["prompt"][0]["content"].endswith(MATH_INSTRUCTION)
    assert reward_for_row(rows[1], "So the answer is \\boxed{24}.") == 1.0
    assert reward_for_row(rows[1], "So the answer is \\boxed{1024}.") == 0.0
    name, rows = load_benchmark(f"aime25={FIX / 'aime25.jsonl'}")
    assert name == "aime25" and len(rows) == 2 and rows[0]["ability"] == "math"
    assert reward_for_row(rows[0], "<think>2+0+2+5</think> \\boxed{9}") == 1.0


def test_aime_parquet_and_bad_row(tmp_path):
    import pandas as pd

    from eval import load_benchmark

    recs = [json.loads(l) for l in (FIX / "aime24.jsonl").read_text().splitlines()]
    pd.DataFrame(recs).to_parquet(tmp_path / "a.parquet")
    assert len(load_benchmark(f"aime24={tmp_path / 'a.parquet'}")[1]) == 3
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 1, "problem": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"aime24 row 0: none of the fields \('answer'"):
        load_benchmark(f"aime24={tmp_path / 'bad.jsonl'}")


def test_livecodebench_schema_window_and_tests():
    from eval import load_benchmark
    from rewards import reward_for_row

    name, rows = load_benchmark(f"livecodebench={FIX / 'livecodebench.jsonl'}")
    assert [r["extra_info"]["index"] for r in rows] == ["abc999_a", "9001", "9002"]  # 2023 problem outside window
    stdin, call, call2 = rows
    gt = json.loads(stdin["reward_model"]["ground_truth"])
    assert gt == {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"]}  # public + decoded private
    # Functional tests stay in LiveCodeBench's strings (one JSON value per input line), the
    # call format the released scorer reads.
    assert json.loads(call2["reward_model"]["ground_truth"]) == {"fn_name": "mul", "inputs": ["3\n4", "0\n9"],
                                                                  "outputs": ["12", "0"]}
    ok = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    assert reward_for_row(stdin, ok) == 1.0
    assert reward_for_row(stdin, ok.replace("a + b", "a - b")) == 0.0
    sol = "```python\nclass Solution:\n    def maxOf(self, nums: List[int]) -> int:\n        return max(nums)\n```"
    assert reward_for_row(call, sol) == 1.0
    assert reward_for_row(call2, "```python\nclass Solution:\n    def mul(self, a, b):\n        return a * b\n```") == 1.0
    # The window is selectable.
    assert len(load_benchmark(f"livecodebench={FIX / 'livecodebench.jsonl'}", lcb_start="2025-01-01")[1]) == 1


def test_unknown_benchmark_is_named():
    from eval import load_benchmark

    with pytest.raises(ValueError, match="'aime2030'"):
        load_benchmark("aime2030")


class CountingEngine:
    """The real vLLM engine, counting the problems it is asked to sample."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, 0

    def generate(self, prompts, **kw):
        self.prompts += len(prompts)
        return self.engine.generate(prompts, **kw)


def test_interrupted_eval_resumes_from_its_jsonl(boxed_model, small_sum_jsonl, tmp_path):
    """Problem q is always sampled with rollout.sample_seed(seed, q): a run cut after 6
    problems and resumed writes the same lines as one uninterrupted run, and samples only
    the 10 missing problems; one chunk of 16 instead of chunks of 4 writes them too."""
    from data import load_rows
    from eval import evaluate, summarize
    from rollout import RolloutConfig, VLLMEngine

    rows = load_rows(small_sum_jsonl)
    engine = CountingEngine(VLLMEngine(boxed_model, RolloutConfig(dtype="float32", max_model_len=512,
                                                                  enforce_eager=True)))
    kw = dict(k=4, temperature=1.0, top_p=1.0, max_tokens=16, seed=7, chunk=4, progress=False)
    full = evaluate(engine, rows, out_path=tmp_path / "full.jsonl", **kw)
    evaluate(engine, rows[:6], out_path=tmp_path / "cut.jsonl", **kw)  # "interrupted" after 6
    with open(tmp_path / "cut.jsonl", "a") as f:
        f.write('{"id": 99, "corr')  # a torn last line from the crash
    engine.prompts = 0
    resumed = evaluate(engine, rows, out_path=tmp_path / "cut.jsonl", **kw)
    assert engine.prompts == 10
    lines = lambda p: sorted(l for l in p.read_text().splitlines() if l.endswith("}"))  # noqa: E731
    assert lines(tmp_path / "cut.jsonl") == lines(tmp_path / "full.jsonl")
    assert resumed == full == summarize(tmp_path / "full.jsonl") and full["problems"] == 16
    evaluate(engine, rows, out_path=tmp_path / "one_chunk.jsonl", **{**kw, "chunk": 16})
    assert lines(tmp_path / "one_chunk.jsonl") == lines(tmp_path / "full.jsonl")  # independent of the chunking


def test_eval_data_parallel_matches_one_process(boxed_model, small_sum_jsonl, tmp_path):
    """torchrun with 2 ranks (one engine each, problems split) writes the same per-problem
    results as a single process."""
    common = ["eval.py", "--model", boxed_model, "--benchmarks", small_sum_jsonl, "--k", "3", "--max-tokens", "12",
              "--enforce-eager", "--chunk", "3", "--dtype", "float32"]
    torchrun(common + ["--out", str(tmp_path / "dp")])
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    read = lambda d: sorted((d / "sums.jsonl").read_text().splitlines())  # noqa: E731
    assert len(read(tmp_path / "dp")) == 16 and read(tmp_path / "dp") == read(tmp_path / "one")
    assert "| sums | 16 | 3 |" in (tmp_path / "dp" / "summary.md").read_text()


# ---- the published repo layouts, as local replicas read through the hub-name code path

def test_benchmark_repos_load_from_local_replicas(tmp_path):
    """HuggingFaceH4/aime_2024 (split train), opencompass/AIME2025 (two configs, split
    test) and livecodebench/code_generation_lite (version-tagged files) as folders laid
    out like the published repos (tests/replicas.py): the same call as a hub name."""
    import replicas
    from eval import load_benchmark
    from rewards import reward_for_row

    name, rows = load_benchmark(f"aime24={replicas.aime_2024(tmp_path / 'aime_2024')}")
    assert name == "aime24" and [r["extra_info"]["index"] for r in rows] == [60, 61, 62]
    assert reward_for_row(rows[1], "\\boxed{24}") == 1.0
    name, rows = load_benchmark(f"aime25={replicas.aime_2025(tmp_path / 'AIME2025')}")
    assert name == "aime25" and len(rows) == 2 and reward_for_row(rows[0], "\\boxed{9}") == 1.0  # AIME2025-I, then -II
    lcb = replicas.livecodebench(tmp_path / "code_generation_lite")
    assert [r["extra_info"]["index"] for r in load_benchmark(f"livecodebench={lcb}", lcb_version="release_v1")[1]] == ["abc999_a", "9001"]
    v2 = load_benchmark(f"livecodebench={lcb}", lcb_version="release_v2")[1]  # test.jsonl + test2.jsonl, dated window
    assert [r["extra_info"]["index"] for r in v2] == ["abc999_a", "9001", "9002"]
    assert [r["extra_info"]["index"] for r in load_benchmark(f"livecodebench={lcb}", lcb_version="v2")[1]] == ["9002"]
    sol = "```python\nclass Solution:\n    def mul(self, a, b):\n        return a * b\n```"
    assert reward_for_row(v2[2], sol) == 1.0 and reward_for_row(v2[2], sol.replace("a * b", "a + b")) == 0.0


@pytest.mark.parametrize("spec,kw,match", [
    ("aime25={aime25}", {}, None),
    ("livecodebench={lcb}", {"lcb_version": "release_v7"}, r"no version 'release_v7'; it has release_v1..release_v2"),
])
def test_wrong_version_is_named_with_the_ones_that_exist(spec, kw, match, tmp_path):
    import replicas
    from eval import load_benchmark

    paths = {"aime25": replicas.aime_2025(tmp_path / "a25"), "lcb": replicas.livecodebench(tmp_path / "lcb")}
    if match is None:
        assert len(load_benchmark(spec.format(**paths))[1]) == 2
        return
    with pytest.raises(ValueError, match=match):
        load_benchmark(spec.format(**paths), **kw)


def test_wrong_config_or_split_lists_the_published_ones(tmp_path):
    import data
    import replicas

    aime25 = replicas.aime_2025(tmp_path / "AIME2025")
    with pytest.raises(ValueError, match=r"no config 'AIME2025'; its configs are \['AIME2025-I', 'AIME2025-II'\]"):
        data.read_repo(str(aime25), "test", "AIME2025")
    with pytest.raises(ValueError, match=r"no split 'train'; its splits are \['test'\]"):
        data.read_repo(str(aime25), "train", "AIME2025-I")


def test_a_truncated_response_scores_zero_unless_graded(boxed_model, small_sum_jsonl, tmp_path):
    """9 tokens hold the boxed model's whole answer ("The answer is \\boxed{N}") but not
    the EOS after it: every response is cut at --max-tokens. By default (report §3.2.3)
    a cut response scores 0; --truncated-reward grade grades its text, as released."""
    from data import load_rows
    from eval import evaluate
    from rollout import RolloutConfig, VLLMEngine

    rows = load_rows(small_sum_jsonl)
    engine = VLLMEngine(boxed_model, RolloutConfig(dtype="float32", max_model_len=512, enforce_eager=True))
    kw = dict(k=4, temperature=1.0, top_p=1.0, max_tokens=9, seed=7, progress=False)
    zero = evaluate(engine, rows, out_path=tmp_path / "zero.jsonl", **kw)
    graded = evaluate(engine, rows, out_path=tmp_path / "grade.jsonl", truncated_reward="grade", **kw)
    assert zero["trunc_ratio"] == graded["trunc_ratio"] > 0.9  # the same samples (same seeds), nearly all cut
    recs = [json.loads(l) for l in (tmp_path / "zero.jsonl").read_text().splitlines()]
    assert not any(c for r in recs for c, t in zip(r["correct"], r["truncated"]) if t)  # no cut response scored
    assert zero["avg@k"] < graded["avg@k"], (zero, graded)
