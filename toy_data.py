"""A built-in toy dataset in the Skywork-OR1-RL-Data schema, for the CPU demo and tests.

Rows follow the released schema (data.py: prompt messages, ability, reward_model with a
JSON-encoded ground truth, extra_info); the code rows cover the stdin, call and
assertion test formats the released scorer reads (code_tests.py).

The toy math task is 2-digit addition ("What is 23 + 45? ..."): SmolLM2-135M-Instruct
gets about 8% of samples right at tau 1.0 (with Math-Verify's verify(); 3% by exact
match, the README's demo), so groups are mixed and
there is a real RL signal. Its rows use reward style "rule-exact": the parsed answer
must equal the gold string (§7.1's direct match), without the verify() fallback that
accepts any expression with the right value -- on this task "23 + 45" itself, which RL
finds within 15 steps ("toy-rule" keeps the fallback to show it). Deterministic by
seed; train and held-out splits never share a problem.

Imports: nothing of the project (data.py imports this file). Exports: arithmetic_rows(n, split,
seed), code_rows(), TOY_INSTRUCTION.
"""

from __future__ import annotations

import json
import random

# The toy task's one instruction (training and the held-out eval both build their rows
# here). Shorter than the AIME instruction of eval.py (DeepSeek's "Please reason step
# by step, and put your final answer within \\boxed{}."): with that one SmolLM2-135M
# rambles -- at T = 128, 61% of samples truncated and 1.6% correct vs 21% and 4.3% with
# this one (64 held-out problems x 8 samples, measured 2026-11-24).
TOY_INSTRUCTION = "Put the final answer in \\boxed{}."


def _row(source: str, question: str, ability: str, ground_truth, index: int, split: str, style: str = "rule") -> dict:
    """A row of the released schema (as data.make_row builds it; spelled out here so that
    data.py can import this file without a cycle), tagged with its toy split."""
    return {"data_source": source, "prompt": [{"role": "user", "content": question}], "ability": ability,
            "reward_model": {"style": style, "ground_truth": json.dumps(ground_truth)},
            "extra_info": {"index": index, "split": split, "model_difficulty": {}}}


def arithmetic_rows(n: int, split: str = "train", seed: int = 0, low: int = 10, high: int = 99,
                    style: str = "rule-exact") -> list[dict]:
    """n addition problems a + b with a, b in [low, high]. The (a, b) pairs are shuffled
    once by `seed` and cut: the first 20% are "test", the rest "train", so the splits
    are disjoint for a given seed.

    style "rule-exact" (default) scores by the direct match of §7.1 only; "rule" adds
    Math-Verify's verify() fallback, under which the answer "23 + 45" (the question
    restated) counts as correct -- and RL on it learns exactly that (README)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    random.Random(seed).shuffle(pairs)
    cut = len(pairs) // 5
    pool = pairs[:cut] if split == "test" else pairs[cut:]
    if n > len(pool):
        raise ValueError(f"asked for {n} {split} problems, only {len(pool)} exist for [{low}, {high}]")
    return [_row("toy-arith", f"What is {a} + {b}? {TOY_INSTRUCTION}", "math", [str(a + b)], i, split, style)
            for i, (a, b) in enumerate(pool[:n])]


def code_rows() -> list[dict]:
    """A few tiny code problems, one per test kind of the released code split."""
    fmt = "\n\nWrite a Python solution in a ```python code block."
    return [
        _row("toy-code-stdin", "Read two integers a and b from one line of standard input and print a + b." + fmt,
             "code", {"inputs": ["1 2\n", "10 -3\n", "0 0\n"], "outputs": ["3\n", "7\n", "0\n"]}, 0, "train"),
        _row("toy-code-call", "Write a function `add(a, b)` that returns a + b." + fmt,
             "code", {"fn_name": "add", "inputs": [[1, 2], [10, -3]], "outputs": [3, 7]}, 1, "train"),
        _row("toy-code-leetcode", "Implement `class Solution` with a method `maxOf(self, nums)` returning the largest number." + fmt,
             "code", {"fn_name": "maxOf", "inputs": [[[1, 5, 2]], [[-1, -7]]], "outputs": [5, -1]}, 2, "train"),
        _row("toy-code-assert", "Write a function `is_even(n)` that returns True when n is even." + fmt,
             "code", {"import_prefix": "import math\n",
                      "test_code": "def check(candidate):\n    assert candidate(2) is True\n    assert candidate(3) is False\n",
                      "entry_point": "is_even"}, 3, "train"),
    ]
