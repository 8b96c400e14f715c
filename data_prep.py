"""Offline data preparation, report §6: the commands that build the RL training set.

    python data_prep.py prepare    --inputs A B ... --decontaminate AIME24 AIME25 --out F
    torchrun ... data_prep.py difficulty --data F --model M --out G      (N=16 math, 8 code)
    torchrun ... data_prep.py judge --data G --judges M1,M2 --votes 16 --threshold 9

* §6.1 `prepare`: in-dataset and cross-dataset deduplication (normalised text), no URLs
  or figure references, math rows whose reference solution's extracted answer matches
  the answer (Math-Verify), n-gram decontamination against AIME24/25, code rows whose
  reference solution passes its own tests in sandbox.py. Each filter prints in/out.
* §6.2 `difficulty`: sample N responses per prompt with rollout.py (tau 1.0), score
  them, write the count into `extra_info.model_difficulty[<model>]`, drop 0/N and N/N.
  (Training keeps 1..15 by these counts: data_filter.select_by_difficulty.)
* §6.3 `judge`: k votes per judge model on problem quality; keep rows with >= threshold.

Rows follow the released schema (data.py). The trainer and the evaluator never import
this file.

Imports: data.py, rewards.py, rollout.py, distributed.py. Exports: prepare,
benchmark_texts, estimate_difficulty, judge_votes, vote, main.
"""

from __future__ import annotations

import json
import re

import data
import distributed

# ------------------------------------------------------------------------------------
# §6.1 preparation: dedup, URL / figure removal, answer re-extraction, decontamination,
# code rows whose reference solution fails its own tests
# ------------------------------------------------------------------------------------

# Problems that point outside themselves (a link the model cannot follow).
_URL = re.compile(r"https?://|www\.", re.I)
# Problems that lean on a picture the model cannot see ("as shown in the figure").
_FIGURE = re.compile(r"\b(figure|fig\.|diagram|picture|image|shown (below|above)|graph below)\b|\[asy\]", re.I)


def problem_text(row: dict) -> str:
    """The user content of the row's chat prompt (the problem statement)."""
    return " ".join(m["content"] for m in row["prompt"] if m.get("role") == "user")


def normalize(text: str) -> str:
    """Lower case, LaTeX spacing and punctuation removed, whitespace collapsed: the
    dedup / contamination key ("Find  $x$." and "find x" are the same problem)."""
    text = re.sub(r"\\[,;:! ]|\$", " ", text.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def reference_solution(row: dict) -> str | None:
    """A reference solution if the row carries one (extra_info.solution / .reference /
    top-level solution); the released RL data has none, so these checks are skipped."""
    ei = row.get("extra_info") or {}
    return ei.get("solution") or ei.get("reference") or row.get("solution")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of the normalised text (one short text: one n-gram)."""
    words = normalize(text).split()
    return {tuple(words[i: i + n]) for i in range(max(len(words) - n + 1, 1))} if words else set()


def prepare(sources: list[list[dict]], bench_texts: list[str], ngram: int = 13, workers: int = 0,
            log=print) -> list[dict]:
    """§6.1 on rows grouped by source dataset (earlier sources win a cross-dataset tie).
    Each filter logs its in/out counts."""
    import rewards

    # One filter: keep the rows `keep` accepts and print how many went in and out.
    def step(name: str, rows: list[dict], keep) -> list[dict]:
        out = [r for r in rows if keep(r)]
        log(f"[prepare] {name:<50} {len(rows):>7} -> {len(out):>7}")
        return out

    # In-dataset dedup, then cross-dataset dedup (same normalised statement).
    deduped, seen_all = [], set()
    n_in = sum(map(len, sources))
    within = []
    # Within each source: the first occurrence of a normalised statement wins.
    for rows in sources:
        seen: set[str] = set()
        within.append([r for r in rows if not (normalize(problem_text(r)) in seen or seen.add(normalize(problem_text(r))))])
    log(f"[prepare] {'in-dataset dedup':<50} {n_in:>7} -> {sum(map(len, within)):>7}")
    # Across sources, in the order given: an earlier source's copy wins.
    for rows in within:
        for r in rows:
            key = normalize(problem_text(r))
            if key not in seen_all:
                seen_all.add(key)
                deduped.append(r)
    log(f"[prepare] {'cross-dataset dedup':<50} {sum(map(len, within)):>7} -> {len(deduped):>7}")
    rows = step("no URLs", deduped, lambda r: not _URL.search(problem_text(r)))
    rows = step("no figure references", rows, lambda r: not _FIGURE.search(problem_text(r)))

    # Math: the reference solution's extracted answer must match the answer (Math-Verify).
    # (Rows without a reference solution -- the released RL data -- pass unchecked.)
    def answer_ok(r):
        sol = reference_solution(r)
        return r["ability"] != "math" or sol is None or rewards.math_reward(sol, r["reward_model"]["ground_truth"]) == 1.0
    rows = step("math: reference answer re-extracted (Math-Verify)", rows, answer_ok)

    # Decontamination: drop a row sharing any word n-gram with a benchmark problem.
    # 13 words by default: long enough that common phrases ("find the value of") never
    # match, short enough that a reworded copy of a benchmark problem still does.
    bench = set().union(*(ngrams(t, ngram) for t in bench_texts)) if bench_texts else set()
    rows = step(f"decontaminated vs benchmarks ({ngram}-gram)", rows, lambda r: not (ngrams(problem_text(r), ngram) & bench))

    # Code: the reference solution must pass the row's own tests in the sandbox.
    # Rows with a reference solution only; graded like a policy response (rewards.py).
    code = [r for r in rows if r["ability"] == "code" and reference_solution(r) is not None]
    ok = rewards.score_batch(code, [f"```python\n{reference_solution(r)}\n```" for r in code], workers)
    # Rows are dicts: identity marks the failed ones without needing a key.
    failed = {id(r) for r, s in zip(code, ok) if s != 1.0}
    return step("code: reference solution passes its tests", rows, lambda r: id(r) not in failed)


def benchmark_texts(paths: list[str]) -> list[str]:
    """Problem statements of benchmark files (AIME schemas: problem / question; or the
    training schema) for decontamination."""
    texts = []
    # Any file data.read_records reads; the field names of AIME24 (problem), AIME25
    # (question) and the training schema (prompt messages) are all accepted.
    for p in paths:
        for i, rec in enumerate(data.read_records(p)):
            t = rec.get("problem") or rec.get("question") or rec.get("Problem")
            if t is None and "prompt" in rec:
                t = problem_text(rec)
            if t is None:
                raise ValueError(f"{p} row {i}: no 'problem', 'question' or 'prompt' field to decontaminate against")
            texts.append(t)
    return texts


# ------------------------------------------------------------------------------------
# §6.2 model-aware difficulty and §6.3 LLM-as-judge, with the rollout engine
# ------------------------------------------------------------------------------------


def estimate_difficulty(rows: list[dict], engine, model_name: str, n_math: int = 16, n_code: int = 8,
                        max_tokens: int = 32768, temperature: float = 1.0, seed: int = 0, chunk: int = 64,
                        workers: int = 0) -> list[dict]:
    """§6.2: sample N responses per prompt (N=16 math, 8 code), score them, and write the
    number correct into extra_info.model_difficulty[model_name]. Rows are split over
    torchrun ranks; every rank returns all rows, annotated, in the original order."""
    from tqdm import tqdm

    import rewards
    from rollout import sample_seed

    # Each rank takes every world-th row; a chunk of them per engine call, math and code
    # apart (their N differ). Problem i's samples are seeded from (seed, i) alone, so the
    # counts do not depend on the number of ranks or the chunking.
    rank, world, _ = distributed.join()
    mine = list(range(rank, len(rows), world))
    counts: dict[int, int] = {}
    for c0 in tqdm(range(0, len(mine), chunk), desc="difficulty", disable=rank != 0, unit="chunk"):
        idx = mine[c0: c0 + chunk]
        for ability, n in (("math", n_math), ("code", n_code)):
            sel = [i for i in idx if rows[i]["ability"] == ability]
            if not sel:
                continue
            samples = engine.generate([rows[i]["prompt"] for i in sel], n=n, temperature=temperature,
                                      max_new_tokens=max_tokens, seed=[sample_seed(seed, i) for i in sel])
            scores = rewards.score_batch([rows[sel[s.prompt_index]] for s in samples], [s.text for s in samples], workers)
            for s, sc in zip(samples, scores):
                counts[sel[s.prompt_index]] = counts.get(sel[s.prompt_index], 0) + int(sc)
            for i in sel:  # a prompt over the length limit gets no samples: count stays absent
                if not any(sel[s.prompt_index] == i for s in samples):
                    counts.pop(i, None)
    # Every rank gets every count, then writes them into copies of the rows (a count for
    # another model, already there, is kept).
    all_counts = dict(distributed.all_gather(sorted(counts.items())))
    out = []
    for i, r in enumerate(rows):
        r = json.loads(json.dumps(r))  # a copy
        ei = r.setdefault("extra_info", {})
        md = ei.get("model_difficulty") or {}
        md = json.loads(md) if isinstance(md, str) else dict(md)
        if i in all_counts:
            md[model_name] = all_counts[i]
        ei["model_difficulty"] = md
        out.append(r)
    return out


# §6.3's question to each judge model; the verdict is the last boxed YES/NO.
JUDGE_PROMPT = (
    "You are checking problems for a reinforcement-learning dataset. A good problem is "
    "self-contained, unambiguous, and has one verifiable final answer (or, for code, a "
    "precise specification). Reply with your reasoning, then \\boxed{{YES}} if the problem "
    "is good or \\boxed{{NO}} if it is not.\n\nProblem:\n{problem}")


def judge_votes(rows: list[dict], engine, k: int, max_tokens: int = 2048, seed: int = 0) -> list[int]:
    """§6.3: k votes of one judge model per row ("YES" in the last box counts 1)."""
    from rollout import sample_seed

    # k samples of the judge per row, temperature 1: the votes are the YES count.
    prompts = [[{"role": "user", "content": JUDGE_PROMPT.format(problem=problem_text(r))}] for r in rows]
    votes = [0] * len(rows)
    for s in engine.generate(prompts, n=k, temperature=1.0, max_new_tokens=max_tokens,
                             seed=[sample_seed(seed, i) for i in range(len(rows))]):
        votes[s.prompt_index] += vote(s.text)
    return votes


def vote(text: str) -> int:
    """1 if the judge's last boxed verdict is YES (\\boxed{YES} or \\boxed{\\text{YES}})."""
    boxes = re.findall(r"\\boxed\{\s*(?:\\text\{)?\s*(YES|NO)", text, re.I)
    return int(bool(boxes) and boxes[-1].upper() == "YES")


# ------------------------------------------------------------------------------------
# Command line: python data_prep.py {prepare, difficulty, judge} ...
# ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The three commands; each writes its output atomically (data.write_rows)."""
    import argparse

    from rollout import add_engine_flags

    p = argparse.ArgumentParser(description="Skywork-OR1 data pipeline (report §6)")
    sub = p.add_subparsers(dest="cmd", required=True)
    # prepare: no model, no GPU; the reference-solution check runs in the sandbox.
    pr = sub.add_parser("prepare", help="§6.1: dedup, URL/figure removal, answer check, decontamination, code check")
    pr.add_argument("--inputs", nargs="+", required=True, help="datasets (.jsonl/.json/.parquet or hub names), priority order")
    pr.add_argument("--decontaminate", nargs="*", default=[], help="benchmark files (AIME24/25, ...) to remove overlaps with")
    pr.add_argument("--ngram", type=int, default=13, help="word n-gram length of the overlap test")
    pr.add_argument("--workers", type=int, default=0, help="processes for the code checks")
    pr.add_argument("--out", required=True)
    # difficulty and judge: an engine per rank (torchrun), the same engine flags.
    for name, hlp in (("difficulty", "§6.2: N samples per prompt, correct counts into extra_info.model_difficulty"),
                      ("judge", "§6.3: LLM-as-judge quality votes")):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("--data", required=True)
        q.add_argument("--out", required=True)
        # §6.2 samples with the same 32K budget as the last training stage; a judge's
        # verdict needs far fewer tokens.
        q.add_argument("--max-tokens", type=int, default=32768 if name == "difficulty" else 2048)
        q.add_argument("--seed", type=int, default=0)
        add_engine_flags(q)  # the engine's settings (rollout.RolloutConfig), as train.py's --rollout-*
        if name == "difficulty":
            q.add_argument("--model", required=True, help="policy whose difficulty is measured (folder or hub id)")
            q.add_argument("--model-name", default="", help="key in model_difficulty (default: --model)")
            # §6.2: 16 samples per math problem, 8 per code problem (code tests cost more).
            q.add_argument("--n-math", type=int, default=16)
            q.add_argument("--n-code", type=int, default=8)
            q.add_argument("--temperature", type=float, default=1.0)  # §6.2: tau 1.0, as in training
            q.add_argument("--keep-all", action="store_true", help="annotate only; keep 0/N and N/N rows")
            q.add_argument("--workers", type=int, default=0)
        else:
            q.add_argument("--judges", required=True, help="comma-separated judge models")
            q.add_argument("--votes", type=int, default=16, help="votes per judge model")
            q.add_argument("--threshold", type=int, default=9, help="keep rows with at least this many YES votes in total")
    a = p.parse_args(argv)

    if a.cmd == "prepare":
        # Each input file is one source, validated row by row (a bad row is named).
        sources = [[data.validate_row(r, f"{src} row {i}") for i, r in enumerate(data.read_records(src))] for src in a.inputs]
        # The benchmark statements to decontaminate against, then every filter in order.
        rows = prepare(sources, benchmark_texts(a.decontaminate), a.ngram, a.workers)
        data.write_rows(rows, a.out)
        print(f"[prepare] wrote {len(rows)} rows to {a.out}")
        return
    from rollout import build_engine, engine_config

    # One engine per rank, its context the prompt budget + the sample budget.
    rank, world, _ = distributed.join()
    rows = data.load_rows(a.data)
    rcfg = engine_config(a, max_model_len=a.max_prompt_len + a.max_tokens, seed=a.seed)
    if a.cmd == "difficulty":
        # The key under model_difficulty: the released data uses the model's short name
        # ("DeepSeek-R1-Distill-Qwen-7B"); by default the --model string itself.
        name = a.model_name or a.model
        engine = build_engine(a.model, rcfg)
        rows = estimate_difficulty(rows, engine, name, a.n_math, a.n_code, a.max_tokens, a.temperature, a.seed,
                                   workers=a.workers)
        # §6.2 drops what the model always solves (N/N) or never solves (0/N): no signal.
        n_of = lambda r: a.n_code if r["ability"] == "code" else a.n_math  # noqa: E731
        kept = rows if a.keep_all else [r for r in rows if 0 < r["extra_info"]["model_difficulty"].get(name, 0) < n_of(r)]
        if rank == 0:  # every rank holds every count; rank 0 writes
            print(f"[difficulty] {name}: {len(rows)} rows, dropped {len(rows) - len(kept)} solved 0/N or N/N")
            data.write_rows(kept, a.out)
        return
    # Votes add up over the judge models; a row stays with at least --threshold YES.
    total = [0] * len(rows)
    for judge in a.judges.split(","):  # one engine at a time: judges can be large
        engine = build_engine(judge, rcfg)
        # This rank's share of the rows; the vote counts are gathered by row index.
        mine = list(range(rank, len(rows), world))
        v = judge_votes([rows[i] for i in mine], engine, a.votes, a.max_tokens, a.seed)
        for i, n in distributed.all_gather(list(zip(mine, v))):
            total[i] += n
        del engine  # free the judge before the next one is built
    kept = [r for r, v in zip(rows, total) if v >= a.threshold]
    if rank == 0:
        print(f"[judge] {len(rows)} rows, votes {sorted(total)}; kept {len(kept)} with >= {a.threshold}")
        data.write_rows(kept, a.out)


if __name__ == "__main__":
    main()
