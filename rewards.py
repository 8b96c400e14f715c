"""Rule-based rewards: Math-Verify for math, the sandbox for code. Report §7.

Binary rewards only: no format bonus, no length penalty (§7). A truncated response
(it hit the length limit) scores 0 without being graded (§3.2.3; score_batch).

Math (§7.1):
    1. keep the text after the reasoning (after `</think>` when present);
    2. parse it with Math-Verify;
    3. reward 1 if the parsed answer string equals a gold answer (direct match);
    4. else verify against parse("\\boxed{" + gold + "}"). Wrapping the gold in \\boxed{}
       matters: parsing a bare gold can change the expression (e.g. "1,2" or "x=3").

Code (§7.2): the last ```python block after the reasoning, run on all of the problem's
tests in the released scorer's formats (code_tests.py: stdin, LiveCodeBench call-based,
check(entry_point), assert_case), each program isolated by sandbox.py; 1 only if every
test passes.

Time bounds. Math-Verify bounds parse/verify with SIGALRM, which exists only in a
process's main thread (in a worker thread its timeout raises instead, and an alarm
also cancels any outer alarm of the caller). So `math_reward`
    * in a main thread (the trainer, or a `score_batch` worker process) uses
      Math-Verify's own alarms: at most MATH_TIMEOUT_S per parse / verify;
    * in any other thread hands the call to a private helper process of that thread
      (spawned, so its main thread owns the alarm) and waits at most
      MATH_CALL_TIMEOUT_S; a helper that overruns is killed and replaced.
Measured on the 2-core CPU box: a power tower or 1000000! returns 0 after 5.1 s in
the main thread (tests/test_rewards.py checks every context). Failures never raise:
they score 0 and are counted by reason in `FAILURES`.

Imports: code_tests.py (lazily; it runs programs in sandbox.py), math_verify. Exports:
math_reward, code_reward, extract_code, reward_for_row, score_batch, Scores, FAILURES.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp

FAILURES: Counter = Counter()  # reason -> count, for logging ("no answer", "timeout", ...)
MATH_TIMEOUT_S = 5  # Math-Verify's per-call parse / verify alarm (main thread only)
MATH_CALL_TIMEOUT_S = 20  # whole math_reward call from a non-main thread (helper process)
_HELPERS = threading.local()  # one helper process per non-main thread


def _after_reasoning(response: str) -> str:
    """Text after the last </think>, or the whole response when there is none."""
    return response.rsplit("</think>", 1)[-1] if "</think>" in response else response


def _golds(ground_truth) -> list[str]:
    """A string, a list, or the released dataset's JSON-encoded list -> list of strings."""
    if isinstance(ground_truth, str):
        s = ground_truth.strip()
        if s.startswith("["):
            try:
                ground_truth = json.loads(s)
            except ValueError:
                pass
    items = ground_truth if isinstance(ground_truth, (list, tuple)) else [ground_truth]
    return [str(g) for g in items if str(g).strip()]


def _math_in_helper(response: str, ground_truth, exact: bool = False) -> float:
    """math_reward from a non-main thread: run it in this thread's helper process (where
    it is in the main thread, alarms on) and wait at most MATH_CALL_TIMEOUT_S."""
    from concurrent.futures import TimeoutError as FutureTimeout

    pool = getattr(_HELPERS, "pool", None)
    if pool is None:
        pool = _HELPERS.pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    try:
        return pool.submit(math_reward, response, ground_truth, exact).result(timeout=MATH_CALL_TIMEOUT_S)
    except FutureTimeout:
        FAILURES["math timeout (helper killed)"] += 1
    except Exception as e:  # noqa: BLE001 -- e.g. the helper died
        FAILURES[f"math helper error: {type(e).__name__}"] += 1
    for proc in list(getattr(pool, "_processes", {}).values()):  # stop the overrunning helper now
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    _HELPERS.pool = None  # a fresh helper for the next call
    return 0.0


def math_reward(response: str, ground_truth, exact: bool = False) -> float:
    """1.0 if the final answer of `response` matches a gold answer, else 0.0. Never raises.
    exact=True stops after the direct string match (no verify() fallback): for golds
    that are plain numbers, where verify() would accept an unevaluated expression."""
    if threading.current_thread() is not threading.main_thread():
        return _math_in_helper(response, ground_truth, exact)
    from math_verify import parse, verify

    t = MATH_TIMEOUT_S  # Math-Verify's SIGALRM timeouts (we are in a main thread here)
    try:
        golds = _golds(ground_truth)
        if not golds:
            FAILURES["unparseable gold"] += 1
            return 0.0
        pred = parse(_after_reasoning(response), parsing_timeout=t)
        if not pred:
            FAILURES["no answer"] += 1
            return 0.0
        pred_str = pred[-1] if isinstance(pred[-1], str) else str(pred[-1])
        # Step 3 of §7.1: the extracted answer string equals a gold answer verbatim.
        if any(pred_str.strip() == g.strip() for g in golds):  # direct match
            return 1.0
        if exact:
            FAILURES["wrong answer"] += 1
            return 0.0
        # Step 4: symbolic/numeric equivalence against the gold wrapped in \\boxed{}.
        for g in golds:
            gold = parse("\\boxed{" + g + "}", parsing_timeout=t)
            if gold and verify(gold, pred, timeout_seconds=t):
                return 1.0
        FAILURES["wrong answer"] += 1
        return 0.0
    except Exception as e:  # noqa: BLE001 -- a reward must never take down training
        FAILURES[f"math error: {type(e).__name__}"] += 1
        return 0.0


# A fenced block tagged python/py (or untagged); the last one after the reasoning is
# the answer, as in the released code reward.
_CODE_BLOCK = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str | None:
    """The last fenced python block after the reasoning, or None."""
    blocks = _CODE_BLOCK.findall(_after_reasoning(response))
    return blocks[-1] if blocks else None


def code_reward(response: str, ground_truth, sandbox_cfg=None) -> float:
    """1.0 only if the last code block passes every test. Never raises on the response;
    tests in no known format raise ValueError (data.validate_row catches such rows
    at load time, naming them)."""
    import code_tests

    tests = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    code_tests.test_format(tests)  # ValueError: the row's tests, not the response, are wrong
    try:
        code = extract_code(response)
        if code is None:
            FAILURES["no code block"] += 1
            return 0.0
        report = code_tests.run_tests(code, tests, sandbox_cfg)
        if not report.all_passed:
            FAILURES[f"code: {report.reason.split(':')[0]}"] += 1
        return 1.0 if report.all_passed else 0.0
    except Exception as e:  # noqa: BLE001
        FAILURES[f"code error: {type(e).__name__}"] += 1
        return 0.0


def reward_for_row(row: dict, response: str) -> float:
    """Dispatch by the row's `ability` ("math" or "code"); the gold is
    row["reward_model"]["ground_truth"]."""
    ability = row.get("ability", "math")
    gt = row["reward_model"]["ground_truth"]
    if ability == "code":
        try:
            return code_reward(response, gt)
        except ValueError as e:
            raise ValueError(f"row {row.get('extra_info', {}).get('index', '?')}: reward_model.ground_truth: {e}") from None
    if ability == "math":  # style "rule" (the released data) or "rule-exact" (direct match only)
        return math_reward(response, gt, exact=row["reward_model"].get("style") == "rule-exact")
    raise ValueError(f"row {row.get('extra_info', {}).get('index', '?')}: unknown ability {ability!r} (want 'math' or 'code')")


def _score_one(args):
    row, response = args
    return reward_for_row(row, response)


class Scores(list):
    """score_batch's rewards, one float per response, and `errors`: how many of them
    are 0 because grading them failed twice (a worker died), not because they were
    wrong (train.py logs it as `reward_errors`)."""

    errors: int = 0


def score_batch(rows: list[dict], responses: list[str], workers: int = 0,
                truncated: list[bool] | None = None) -> Scores:
    """Rewards for (row, response) pairs. workers=0 scores in this process (main thread,
    with Math-Verify's alarms); workers>1 uses a spawn-started process pool, so no
    fork of the trainer (and its threads) ever runs untrusted code.

    truncated: one flag per response (finish reason "length"). A truncated response
    scores 0 without being graded -- report §3.2.3: past the context length "the
    outcomes cannot be derived, and accuracy rewards are set to 0". Grading its text
    anyway rewards a last expression that happens to match, which RL learns to exploit.
    Pass None to grade every response (train.py --truncated-reward grade).

    A pool worker that dies mid-batch (the OOM killer, a crash in a native library, a
    kill) breaks the whole pool: every response not graded yet is graded again, once, in
    a fresh pool; if that pool breaks too, they score 0 and are counted in `errors`."""
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} rows but {len(responses)} responses")
    if truncated is not None and len(truncated) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(truncated)} truncation flags")
    todo = [i for i in range(len(rows)) if truncated is None or not truncated[i]]
    out = Scores([0.0] * len(rows))
    if workers <= 1:
        for i in todo:
            out[i] = reward_for_row(rows[i], responses[i])
        return out
    for _ in range(2):  # the first pool, then one fresh pool for what it left ungraded
        todo = _grade_in_pool(rows, responses, todo, workers, out)
        if not todo:
            break
    out.errors = len(todo)
    FAILURES["grading worker died (twice)"] += len(todo)
    return out


def _grade_in_pool(rows, responses, todo: list[int], workers: int, out: list) -> list[int]:
    """Grade rows[i], responses[i] for i in todo into out[i] with a fresh spawn-started
    pool; return the indices left ungraded because the pool broke."""
    from concurrent.futures.process import BrokenProcessPool

    left = []
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [(i, pool.submit(_score_one, (rows[i], responses[i]))) for i in todo]
        for i, f in futures:
            try:
                out[i] = f.result()
            except BrokenProcessPool:  # a worker died: every future not done fails with it
                left.append(i)
    except BaseException:  # e.g. preemption.Preempted: stop grading now, not after the batch
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return left
