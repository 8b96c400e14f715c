"""A course kit cut from the trainer itself: the report's ideas as graded exercises, and labs.

Idea: turn this project into exercises without touching it. Teaching repositories have stub
functions and tests but no real trainer, and real trainers have nothing to teach with; this
file makes the trainer both. `make` copies the project and replaces the bodies of chosen
functions by `raise NotImplementedError(...)`, using `ast` positions and the list below (no
markers in the trainer's files); `check` grades a student's copy; `lab` runs the entropy
experiments of make_figures.sh on the student's code.

    python course.py list                      the exercises: report section, file, functions
    python course.py make OUT [--only 1,3]     a copy of the project with those bodies blanked
    python course.py check OUT [N]             grade exercise N (default: all) in OUT
    python course.py lab N [--steps S] [--dry-run]   lab N (1-3) on the code in this folder

Report sections: the exercises span §2 eq. 2.5 (group advantages), §3.1 eq. 3.1 (the
token-level PPO-clip loss, its entropy term and the step's token count), §4.5 (clip-higher),
§3.2.3 (truncation masks), §3.2.4 (temperature), §3.2.5 eq. 3.2 (adaptive entropy control),
§3.1 Data Collection (rejection sampling, online filtering), §8.1 (pass@k, avg@k); the labs
redraw Fig. 9 (§3.2.4), Fig. 16 (§4.4, N_SGD) and Fig. 10 (§3.2.5, §4.5).

`check` runs, per exercise, (1) comparisons of the student's function with THIS project's
implementation (the folder course.py sits in) on random and edge-case inputs -- those live
in course_checks.py, one check per exercise, each failure printed with the expected value
and a hint citing the report's equation -- and (2) the project's own tests of that function
inside OUT (its doctests, in-process, and the listed pytest tests). A test that exercises
several exercises' functions (e.g. the loss with the entropy) counts against one only while
the others pass their comparisons. Exit 0 when every chosen exercise passes. EXERCISES.md
explains each exercise and the labs.

Imports: course_checks (and through it torch); pytest (check only). The graded files
(loss.py, entropy_control.py, data_filter.py, eval.py, packing.py) are loaded by path at
check time, from the copy and from this folder; no trainer file imports this one. `make`
copies course.py, course_checks.py and EXERCISES.md into the student's copy with the rest.
Exports: EXERCISES, LABS, LAB_HALVED, LAB_SET, make, grade, passed, report, figure_runs,
lab_scale, lab_commands, main.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import doctest
import importlib.util
import io
import itertools
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from course_checks import CHECKS, NOT_IMPLEMENTED, compare

# The folder this file sits in: the reference for `check`, the source for `make`, and the
# working folder of `lab` (the student's copy, when run from there).
ROOT = Path(__file__).resolve().parent
# A blanked body is one line: MARK + 'N: title; see EXERCISES.md")', at the body's indent.
MARK = 'raise NotImplementedError("Exercise '  # how a blanked body starts; `check` refuses such a reference


@dataclass(frozen=True)
class Exercise:
    """One exercise: which function bodies `make` blanks, and what `check` runs.

    `make` blanks every function in `functions` whole (its docstring stays), or, with
    `branches`, only the bodies of those `if` statements inside them. `check` runs the
    comparisons course_checks.CHECKS[n], then `doctests` and `tests` in the student's copy."""
    n: int
    title: str  # short; appears in the NotImplementedError message (no double quotes)
    section: str  # the report's section / equation
    file: str  # the trainer file, e.g. "loss.py"
    functions: tuple  # qualified names in that file ("Class.method" for methods)
    difficulty: str  # easy / medium / hard
    branches: tuple = ()  # if set: blank only the `if` statements with these tests, not the whole body
    tests: tuple = ()  # the project's pytest tests of it ("tests/x.py::test_y")
    doctests: tuple = ()  # qualified names whose docstring examples are run


# The list `make` and `check` work from, in the order EXERCISES.md teaches. A listed
# function must keep its name in the trainer (after a rename `make` stops with a
# LookupError naming the file); the tests named are the project's own, run in the copy.
EXERCISES = [
    Exercise(1, "group advantages", "§2 eq. 2.5", "loss.py", ("group_advantages",), "easy",
             tests=("tests/test_loss.py::test_advantages_by_hand",), doctests=("group_advantages",)),
    # Exercise 2 lives inside exercise 1's function: only the two mask branches are blanked,
    # so a student who did 1 (or a copy made with --only 2) writes just the masks (§3.2.3).
    Exercise(2, "advantage masks for truncated responses", "§3.2.3", "loss.py", ("group_advantages",), "easy",
             branches=('mask_mode == "before"', 'mask_mode != "none"'),
             tests=("tests/test_loss.py::test_advantage_masks",), doctests=("group_advantages",)),
    Exercise(3, "token-level PPO-clip loss with clip-higher and the entropy bonus", "§3.1 eq. 3.1, §4.5 clip-higher",
             "loss.py", ("policy_loss",), "hard",
             tests=tuple(f"tests/test_loss.py::{t}" for t in (
                 "test_on_policy_ratio_one_no_clipping", "test_clip_counts_asymmetric_bounds_both_signs",
                 "test_token_mean_gradient_micro_batches_equal_one_batch", "test_seq_mean_differs_from_token_mean",
                 "test_k3_kl_is_zero_at_reference_and_positive_elsewhere", "test_entropy_bonus_raises_entropy",
                 "test_k3_kl_is_clamped_like_the_released_code")), doctests=("policy_loss",)),
    # Exercise 3's loss tests also call exercise 4's functions (log-probs, entropy): grade()
    # compares both, and counts such a test against one only while the other compares clean.
    Exercise(4, "log-probs and entropy at the sampling temperature", "§3.1 eq. 3.1 (H_t), §3.2.4", "loss.py",
             ("token_logprobs", "entropy_from_logits"), "easy",
             tests=tuple(f"tests/test_loss.py::{t}" for t in (
                 "test_entropy_matches_categorical_and_temperature", "test_token_logprobs_match_log_softmax",
                 "test_token_mean_gradient_micro_batches_equal_one_batch", "test_entropy_bonus_raises_entropy",
                 "test_chunked_head_equals_full_logits_values_and_gradients")),
             doctests=("token_logprobs", "entropy_from_logits")),
    Exercise(5, "adaptive entropy control", "§3.2.5 eq. 3.2", "entropy_control.py",
             ("AdaptiveEntropyController.update", "AdaptiveEntropyController.coef"), "medium",
             tests=("tests/test_entropy_control.py",), doctests=("AdaptiveEntropyController",)),
    Exercise(6, "rejection sampling of all-equal groups", "§3.1 Data Collection 2", "data_filter.py",
             ("rejection_sample",), "easy",
             tests=("tests/test_data.py::test_rejection_sampling_and_online_stats",), doctests=("rejection_sample",)),
    Exercise(7, "online filtering between stages", "§3.1 Data Collection 1", "data_filter.py",
             ("PromptStats.record", "PromptStats.solved", "PromptStats.merge"), "easy",
             tests=("tests/test_data.py::test_rejection_sampling_and_online_stats",)),
    Exercise(8, "unbiased pass@k and avg@k", "§8.1", "eval.py", ("avg_at_k", "pass_at_k"), "easy",
             tests=("tests/test_eval.py::test_avg_and_pass_at_k_by_hand",), doctests=("avg_at_k", "pass_at_k")),
    # The advanced two: which rank and micro-batch each sequence goes to (eq. 3.1's N_tok is
    # summed over them), and the gradient of log p and H without [N, V] logits in memory.
    Exercise(9, "sequences over ranks and micro-batches by tokens", "§3.1 step 8 (advanced)", "packing.py",
             ("balance", "plan"), "medium", doctests=("balance", "plan")),
    Exercise(10, "the chunked loss head's closed-form backward", "eq. 3.1 at 32K tokens (advanced)", "loss.py",
             ("_ChunkedHead.backward",), "hard",
             tests=("tests/test_loss.py::test_chunked_head_equals_full_logits_values_and_gradients",)),
]
BY_N = {e.n: e for e in EXERCISES}
# Each exercise is graded by course_checks.CHECKS[n]: the two lists must name the same numbers.
if set(CHECKS) != set(BY_N):
    raise RuntimeError(f"course_checks.CHECKS has {sorted(CHECKS)}, the exercise list {sorted(BY_N)}")


# ------------------------------------------------------------------------------------------
# make: blank the chosen bodies by their ast positions, copy everything else byte for byte
# ------------------------------------------------------------------------------------------


def _node(tree: ast.AST, qualname: str, file: str):
    """The def/class `qualname` ("Class.method") in a parsed file, or a clear error."""
    node = tree
    for part in qualname.split("."):
        # Walk down one name at a time: "Class.method" is a def inside the class's body.
        found = [n for n in getattr(node, "body", []) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part]
        if not found:
            raise LookupError(f"{file}: no function {qualname!r} (the exercise list in course.py needs updating)")
        node = found[0]
    return node


def _span(stmts: list, lines: list[str]) -> tuple[int, int, int]:
    """(first line, last line, indent) of a statement list that starts on its own line."""
    # A one-line `def f(): return x` has no body line of its own to replace; no listed
    # function is written so, and one that ever is fails here, loudly, naming the line.
    first = stmts[0]
    if lines[first.lineno - 1][: first.col_offset].strip():
        raise ValueError(f"line {first.lineno}: a body sharing its line with the def/if cannot be blanked")
    return first.lineno, stmts[-1].end_lineno, first.col_offset


def _edits(source: str, ex: Exercise) -> list[tuple[int, int, int]]:
    """The line spans `make` replaces for one exercise. A whole-function exercise: one span
    per function, its body after the docstring. A branch exercise: one span per body and
    per `else` body of each matching `if` (the tests themselves stay)."""
    # Spans are (first line, last line, indent): 1-based and inclusive, as ast reports them.
    tree, lines = ast.parse(source), source.splitlines()
    spans = []
    for qualname in ex.functions:
        fn = _node(tree, qualname, ex.file)
        if not ex.branches:
            body = fn.body
            if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]  # keep the docstring: it is the specification
            spans.append(_span(body, lines))
            continue
        # A branch exercise: `if` tests are matched by their normalised text (ast.unparse), so
        # the list need not copy the source's spacing or parentheses.
        wanted = {ast.unparse(ast.parse(b, mode="eval").body) for b in ex.branches}
        for node in ast.walk(fn):  # every branch of each selected `if`: its tests stay, its bodies go
            if isinstance(node, ast.If) and ast.unparse(node.test) in wanted:
                spans.append(_span(node.body, lines))
                if node.orelse:
                    spans.append(_span(node.orelse, lines))
        if len(spans) < len(wanted):
            raise LookupError(f"{ex.file}: {qualname} has no `if` among {sorted(wanted)}")
    return spans


def blank(source: str, exercises: list[Exercise]) -> str:
    """The file's text with each exercise's spans replaced by one `raise` line. A branch
    exercise inside a function another chosen exercise blanks whole is subsumed by it."""
    spans = [(a, b, ind, ex) for ex in exercises for a, b, ind in _edits(source, ex)]
    # A span inside another (exercise 2's branches inside exercise 1's body) is dropped:
    # the outer `raise` already replaces it.
    spans = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and o != s for o in spans)]
    lines = source.splitlines(keepends=True)
    for a, b, ind, ex in sorted(spans, key=lambda s: -s[0]):  # bottom up: earlier line numbers stay valid
        lines[a - 1: b] = [f'{" " * ind}{MARK}{ex.n}: {ex.title}; see EXERCISES.md")\n']
    out = "".join(lines)
    ast.parse(out)  # the copy must import
    return out


def project_files(root: Path = ROOT) -> list[str]:
    """The project's tracked files (git ls-files), plus this kit's own three files."""
    try:
        names = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, text=True,
                               check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but outputs
        skip = {".git", ".venv", "runs", "__pycache__"}
        names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not skip & set(p.parts)]
    # The kit's files go with the copy even while untracked: the copy's course.py imports
    # course_checks (for `list` and `lab` there) and the student reads EXERCISES.md.
    kit = ["course.py", "course_checks.py", "EXERCISES.md"]
    names = [n for n in dict.fromkeys(names + kit) if n and (root / n).is_file()]
    return sorted(names)


def make(out: Path, only: list[int] | None = None, root: Path = ROOT) -> list[Exercise]:
    """Copy the project's files to `out`, blanking the chosen exercises (default: all)."""
    # No --only: every exercise; exercise 2's spans then lie inside 1's and blank() drops them.
    chosen = [BY_N[n] for n in (only or BY_N)]
    # A folder that holds anything is refused: writing blanks over a student's work loses it.
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"make: {out} exists and is not empty; choose a new folder")
    by_file: dict[str, list[Exercise]] = {}
    for ex in chosen:
        by_file.setdefault(ex.file, []).append(ex)
    # Only the graded files change; every other file is copied with its metadata (copy2),
    # so apart from the blanked bodies the copy is the project byte for byte.
    for name in project_files(root):
        dst = out / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if name in by_file:
            dst.write_text(blank((root / name).read_text(), by_file[name]))
        else:
            shutil.copy2(root / name, dst)
    return chosen


# ------------------------------------------------------------------------------------------
# check: comparisons against this project's implementation, then the project's tests
# ------------------------------------------------------------------------------------------


# A fresh suffix per load: the reference and the copy both have a `loss` module, and
# grade() may run many times in one process; unique names keep them apart in sys.modules.
_loads = itertools.count()


def _load(root: Path, names: set[str], tag: str) -> SimpleNamespace:
    """Import root/<name>.py for each name under a private module name (no clash with the
    modules of the running process); their own imports resolve on sys.path as usual."""
    ns = SimpleNamespace()
    for name in sorted(names):
        spec = importlib.util.spec_from_file_location(f"_course_{tag}{next(_loads)}_{name}", root / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        # Runs the file's top level: an error there (a syntax error, a bad import) propagates
        # to grade(), which reports it as the student's file not importing.
        spec.loader.exec_module(mod)
        setattr(ns, name, mod)
    return ns


def _doctest(mod, qualname: str) -> str | None:
    """Run the docstring examples of mod.<qualname>; None if they pass, else the report."""
    # Resolve "Class.method" to the object whose docstring holds the examples.
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    out = io.StringIO()
    # recurse=False: only this object's own examples (a class's docstring, not its
    # methods'), so each doctest belongs to one exercise. The globals are the module's, as
    # when `python -m doctest` runs the file.
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder(recurse=False).find(obj, qualname, globs=dict(vars(mod))):
        runner.run(test, out=out.write)
    return (out.getvalue() or "failed") if runner.failures else None


def _pytest(out: Path, ids: list[str]) -> dict[str, str | None]:
    """Run the given tests of OUT in this process; {id: None if passed else the failure}.
    In-process (torch is imported once) and from OUT, so its tests import the student's files;
    a parametrised test counts as one, failing if any of its cases fails."""
    import pytest  # here, not at the top: list, make and lab work without pytest installed

    # A plugin object: pytest reports setup, call and teardown of every test; a failure in
    # any phase fails the id, a passing call marks it passed unless something failed.
    class Collect:
        def __init__(self):
            self.res = {}

        def pytest_runtest_logreport(self, report):
            if report.failed or (report.when == "call" and report.passed):
                # Map a node id back to the id asked for: a file id covers its tests, a test id its
                # parametrised cases ("test_x[3]").
                key = next((i for i in ids if report.nodeid == i or report.nodeid.startswith(i.rstrip("/") + "::")
                            or report.nodeid.startswith(i + "[")), report.nodeid)
                if report.failed:
                    self.res[key] = "\n".join(report.longreprtext.splitlines()[-12:])
                else:
                    self.res.setdefault(key, None)

    # Run from OUT, whose folder main() put first on sys.path: `import loss` in the tests
    # imports the student's loss.py. pytest's own output is swallowed; report() shows failures.
    col, here = Collect(), os.getcwd()
    os.chdir(out)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=", "--tb=short", *ids], plugins=[col])
    finally:
        os.chdir(here)
    return {i: col.res.get(i, "not collected (the test is missing or did not run)") for i in ids}


def grade(out: Path, numbers: list[int], run_tests: bool = True, root: Path = ROOT) -> dict[int, dict]:
    """Grade `numbers` in the copy `out` against the project at `root`. Returns per exercise
    {"failures": [(check, expected, got, hint)], "checks": n, "tests": n, "notes": [...]}.

    Exercises sharing a project test with a chosen one are compared too (not reported), so
    that a failing shared test is blamed on the right exercise. run_tests=False skips the
    pytest tests but not the doctests: `check --no-tests`, and tests/test_course.py's quick
    path."""
    # The reference must be whole: against a blanked reference every comparison would call
    # a NotImplementedError on both sides, and every student body would seem wrong.
    refs = [(f, m) for f in sorted({e.file for e in EXERCISES}) if MARK in (m := (root / f).read_text())]
    if refs:
        raise SystemExit(f"check: the reference {root / refs[0][0]} is itself a blanked copy; grade with the full "
                         f"project's course.py: python /path/to/magic-or1/course.py check {out}")
    # The exercises sharing a test with a chosen one are compared too (see the docstring).
    shared = {n for n in BY_N for c in numbers if set(_tests_of(BY_N[n])) & set(_tests_of(BY_N[c]))}
    todo = sorted(set(numbers) | shared)
    # The modules to load: the files these exercises live in, e.g. {"loss", "entropy_control"}.
    mods = {e.file[:-3] for e in (BY_N[n] for n in todo)}
    result = {}
    # The reference from root (this folder), the student's from out. A student's file that
    # does not import fails every chosen exercise with that error and nothing else runs.
    ref = _load(root, mods, "ref")
    try:
        stu = _load(out, mods, "stu")
    except Exception as e:  # noqa: BLE001 -- the student's file does not import
        return {n: {"failures": [("import", "the file imports", f"{type(e).__name__}: {e}", "fix the error first")],
                    "checks": 1, "tests": 0, "notes": []} for n in numbers}
    for n in todo:
        # (1) the comparisons of course_checks.py, for all of todo: the counting of shared tests
        # below needs to know which of those exercises compare clean.
        g = compare(n, stu, ref)
        result[n] = {"failures": g.failures, "checks": g.count, "tests": 0, "notes": []}
    # (2) The project's own tests: doctests of the functions, on the student's modules loaded
    # above, then the listed pytest ids, each run once even when several exercises list it.
    runs = {}
    for n in todo:
        for q in BY_N[n].doctests:
            runs[f"doctest {BY_N[n].file[:-3]}.{q}"] = _doctest(getattr(stu, BY_N[n].file[:-3]), q)
    ids = sorted({t for n in todo for t in BY_N[n].tests})
    if run_tests and ids:
        runs.update(_pytest(out, ids))
    compared_bad = {m for m in todo if result[m]["failures"]}  # before any test's failure is added
    # Count each test against the chosen exercise it belongs to, unless another exercise the
    # test needs fails its comparisons (then the test says nothing about this one), or this
    # exercise is still blanked (its one failure already says so).
    for n in numbers:
        ex = BY_N[n]
        for test in [t for t in _tests_of(ex) if t in runs]:
            result[n]["tests"] += 1
            if runs[test] is None:
                continue
            blocking = [m for m in todo if m != n and test in _tests_of(BY_N[m]) and m in compared_bad]
            if blocking:  # the test also needs exercises that fail: it says nothing about this one yet
                result[n]["notes"].append(f"{test} fails but is not counted: it also needs exercise(s) "
                                          f"{', '.join(map(str, blocking))}, which fail")
                continue
            if any(f[3] == NOT_IMPLEMENTED for f in result[n]["failures"]):
                result[n]["notes"].append(f"{test} fails too (not implemented yet)")
                continue
            # The failure's last 12 lines: pytest's assertion and the values it compared.
            text = "\n".join(runs[test].strip().splitlines()[-12:])
            result[n]["failures"].append((f"project test {test}", "it passes", text,
                                          "the project's own test of this function: read its assertion above"))
    return {n: result[n] for n in numbers}


def _tests_of(ex: Exercise) -> list[str]:
    """The project's tests of an exercise: its doctests (named by module) and pytest ids."""
    return [f"doctest {ex.file[:-3]}.{q}" for q in ex.doctests] + list(ex.tests)


def passed(res: dict) -> bool:
    """An exercise passes when no comparison and no counted project test failed."""
    return not res["failures"]


def report(results: dict[int, dict]) -> str:
    """The text `check` prints: per exercise a verdict line, then each failure with what was
    expected, what the student's code gave, and the hint; notes for tests not counted."""
    lines = []
    for n, res in results.items():
        ex = BY_N[n]
        ok = passed(res)
        # e.g. "Exercise 1: group advantages (§2 eq. 2.5) -- FAIL (9 comparisons, 2 project tests)"
        lines.append(f"Exercise {n}: {ex.title} ({ex.section}) -- {'PASS' if ok else 'FAIL'} "
                     f"({res['checks']} comparisons, {res['tests']} project tests)")
        for f in res["failures"]:
            # Every hint cites the report: the exercise's section where the hint itself does not.
            hint = f[3] if re.search(r"eq\. |§", f[3]) or f[3] == NOT_IMPLEMENTED else f"{ex.section}: {f[3]}"
            # A multi-line "got" (a pytest failure) is indented under its first line.
            lines.append(f"  FAIL      {f[0]}")
            lines += [f"  expected: {f[1]}", "  got:      " + f[2].replace("\n", "\n            "), f"  hint:     {hint}"]
        lines += [f"  note      {note}" for note in res["notes"]]
    # The summary line the tests look for: "N of M exercises pass".
    good = sum(passed(r) for r in results.values())
    lines.append(f"{good} of {len(results)} exercises pass")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# labs: make_figures.sh's runs (its flags, read from the script) on this folder's code
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """Two of make_figures.sh's runs that differ in one flag, and the figures compared. The
    flags are read from the script and scaled down to the labs' size (LAB_HALVED and
    LAB_SET below); `sets` changes flags of the lab's first run the same way. `title` and
    `section` are printed by `list` and titled on the figures; `labels` name the two runs
    in the figures' legend, in the order of `runs`."""
    n: int
    title: str
    section: str
    runs: tuple  # make_figures.sh run names
    labels: tuple
    steps: int  # the training steps of each run
    sets: tuple = ()  # (flag, value) pairs set in its FIRST run's own flags (see lab_scale)


# The labs' size. make_figures.sh's runs (8 prompts x 8 samples, T 128, lr 2e-5) took 17-18
# minutes for 15 steps on the slowest 2-core machine measured, an AVX2-only EPYC where the
# tiny recipe trains in float32 (EXERCISES.md); a lab of two such runs took 29-35 minutes.
# So every lab run halves the prompts per rollout batch (D_R, and D_T with it, so that
# D_R/D_T and with it N_SGD stay the script's), halves T to 64 tokens, and doubles the
# learning rate, so that entropy still collapses within the lab's 10 steps. A run then took
# 5-7.5 minutes there, a lab 13-15; every other flag is the script's.
LAB_HALVED = ("--rollout-batch-size", "--mini-batch-size")  # D_R, D_T (every run's flags)
LAB_SET = {"--lr": "4e-5", "--max-response-len": "64"}  # set in the script's common flags


def lab_scale(flags: list[str], sets: dict) -> list[str]:
    """make_figures.sh's flags at the labs' size: the values of LAB_HALVED's flags halved,
    each flag of `sets` given its value (replaced where the flags have it, else appended,
    so that every flag appears once in the printed command).

    >>> lab_scale(["--rollout-batch-size", "8", "--mini-batch-size", "4", "--lr", "2e-5"],
    ...           {"--lr": "4e-5", "--max-response-len": "64"})
    ['--rollout-batch-size', '4', '--mini-batch-size', '2', '--lr', '4e-5', '--max-response-len', '64']
    """
    out = list(flags)
    for i in range(1, len(out)):
        if flags[i - 1] in LAB_HALVED:
            out[i] = str(int(flags[i]) // 2)
        elif flags[i - 1] in sets:
            out[i] = sets[flags[i - 1]]
    for flag, value in sets.items():
        if flag not in flags:
            out += [flag, value]
    return out


# Each lab pairs two of make_figures.sh's runs that differ in one setting (the labels say
# which), so its figure isolates that setting. Lab 3 reuses lab 1's tau 1.0 run (the
# script's 30-step "off30" is the same run as "tau1.0", only longer). Lab 2 trains 8 steps:
# its N_SGD 4 run updates on every sample twice (N_reuse 2), a longer update per step. Lab
# 3's controller moves by delta 0.1 where the script's moves by 0.05: in 10 steps, 0.05 a
# step would not reach a coefficient that lifts entropy back over the target.
LABS = {1: Lab(1, "sampling temperature vs entropy collapse", "§3.2.4, Fig. 9", ("tau0.6", "tau1.0"), ("tau 0.6", "tau 1.0"), 10),
        2: Lab(2, "more SGD steps per rollout (N_SGD)", "§4.4, Fig. 16", ("reuse4", "tau1.0"),
               ("4 SGD steps per rollout", "1 SGD step"), 8),
        3: Lab(3, "adaptive entropy control on/off", "§3.2.5, §4.5, Fig. 10", ("adaptive", "tau1.0"),
               ("adaptive: delta 0.1 max 1.0", "no entropy term"), 10, (("--entropy-delta", "0.1"),))}


def figure_runs(script: Path = ROOT / "make_figures.sh") -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """(common flags, {run name: its flags}, {variable: value}) from make_figures.sh, so a
    lab runs exactly the script's settings; variables as the script reads them (env first)."""
    text = script.read_text()
    # make_figures.sh sets `VAR=${VAR:-default}`: the environment wins, as in the script.
    env = {k: os.environ.get(k, v) for k, v in re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}", text, re.M)}
    # Expand $VAR and ${VAR} with those values (names not set there stay as written).
    sub = lambda s: re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], m[0]), s)  # noqa: E731
    # `common=( ... )`: the flags every run shares (recipe, batch and group sizes, ...).
    common = shlex.split(sub(re.search(r"^common=\((.*?)\)", text, re.M | re.S)[1]))
    runs = {}
    for line in text.splitlines():
        if line.startswith("run ") and not line.startswith("run()"):
            name, *flags = shlex.split(sub(line))[1:]
            if flags[:1] == ["--steps"]:
                flags = flags[2:]  # a lab sets its own step count
            runs[name] = flags
    return common, runs, env


def lab_commands(n: int, steps: int | None = None, out: str = "runs/labs") -> list[list[str]]:
    """The commands of lab n: one torchrun train.py per run (make_figures.sh's run()), then plots."""
    lab, (common, runs, env) = LABS[n], figure_runs()
    steps = steps or lab.steps
    dirs = [f"{out}/{r}-s{steps}" for r in lab.runs]
    with socket.socket() as s:  # a free port, so a lab beside another torchrun job does not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # make_figures.sh's run(): 2 processes (one per core, gloo on CPU), the common flags at
    # the labs' size, the lab's step count, then the run's own flags last, so that they win
    # over the common ones (with the lab's own `sets` in its first run).
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "train.py",
             *lab_scale(common, LAB_SET), "--max-steps", str(steps), "--output-dir", d,
             *lab_scale(runs[r], dict(lab.sets) if i == 0 else {})] for i, (r, d) in enumerate(zip(lab.runs, dirs))]
    # plots.py --compare draws one metric of both runs on one figure, per training step.
    plot = [sys.executable, "plots.py", "--compare", *dirs, "--labels", ",".join(lab.labels)]
    cmds.append(plot + ["--key", "entropy", "--title", f"lab {n}: {lab.title}", "--out", f"{out}/lab{n}_entropy.png"]
                + (["--target", env["TARGET"]] if n == 3 else []))
    cmds.append(plot + ["--key", "reward_mean", "--title", f"lab {n}: reward", "--out", f"{out}/lab{n}_reward.png"])
    if n == 3:
        cmds.append([sys.executable, "plots.py", "--compare", dirs[0], "--labels", lab.labels[0], "--key", "entropy_coef",
                     "--title", "lab 3: the coefficient alpha_k", "--out", f"{out}/lab3_coef.png"])
    return cmds


def run_lab(n: int, steps: int | None, dry_run: bool) -> int:
    """Run lab n's commands in this folder (a run that finished before is kept, as
    make_figures.sh does); each training run logs to runs/labs/<run>.log."""
    for cmd in lab_commands(n, steps):
        # out_dir: the training run's --output-dir; None for the plotting commands.
        out_dir = cmd[cmd.index("--output-dir") + 1] if "--output-dir" in cmd else None
        print("$", shlex.join(cmd), flush=True)
        if dry_run:
            continue
        # make_figures.sh's marker of a finished run: the final checkpoint's config, written last.
        if out_dir and (ROOT / out_dir / "stage1/final/config.json").exists():
            print(f"[lab] {out_dir}: done before, kept")
            continue
        if out_dir:  # a run that did not finish starts again, as in make_figures.sh
            shutil.rmtree(ROOT / out_dir, ignore_errors=True)
            (ROOT / out_dir).parent.mkdir(parents=True, exist_ok=True)
        # Training output goes to its log (a run prints a line per step); plots print here.
        with open(ROOT / f"{out_dir}.log", "w") if out_dir else contextlib.nullcontext() as log:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT if log else None,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode  # the log follows the steps
        if rc:
            print(f"[lab] exit {rc}" + (f"; see {out_dir}.log" if out_dir else ""))
            return rc
    return 0


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def _numbers(text: str, flag: str) -> list[int]:
    """Exercise numbers from "1,3" ("" gives []), or an error naming the flag and the value."""
    try:
        nums = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: exercise numbers like 1,3 expected, got {text!r}") from None
    if bad := [x for x in nums if x not in BY_N]:
        raise SystemExit(f"{flag}: no exercise {bad[0]}; there are 1..{len(EXERCISES)} (python course.py list)")
    return nums


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (`check`: 0 when every chosen exercise passes)."""
    p = argparse.ArgumentParser(description="the report's ideas as exercises cut from this trainer (EXERCISES.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the exercises and labs")
    m = sub.add_parser("make", help="a copy of the project with the chosen exercises blanked")
    m.add_argument("out")
    m.add_argument("--only", default="", help="comma-separated exercise numbers (default: all)")
    c = sub.add_parser("check", help="grade a copy against this project's implementation")
    c.add_argument("out")
    c.add_argument("n", nargs="?", default="", help="exercise number(s), comma-separated (default: all)")
    c.add_argument("--no-tests", action="store_true", help="comparisons and doctests only, not the pytest tests")
    la = sub.add_parser("lab", help="run a lab on the code in this folder")
    la.add_argument("n", type=int, choices=sorted(LABS))
    la.add_argument("--steps", type=int, default=None, help="training steps per run (default: the lab's)")
    la.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    if a.cmd == "list":
        # One row per exercise, the columns of EXERCISES.md's table, then the labs.
        print(f"{'#':>2}  {'exercise':<64} {'report':<33} {'file':<19} {'difficulty':<10} functions")
        for e in EXERCISES:
            fns = ", ".join(e.functions) + (" (the mask branches)" if e.branches else "")
            print(f"{e.n:>2}  {e.title:<64} {e.section:<33} {e.file:<19} {e.difficulty:<10} {fns}")
        print("\nlabs (python course.py lab N):")
        for lab in LABS.values():
            print(f"{lab.n:>2}  {lab.title:<64} {lab.section:<33} runs {', '.join(lab.runs)} ({lab.steps} steps each)")
        return 0
    if a.cmd == "make":
        try:
            chosen = make(Path(a.out), _numbers(a.only, "--only") or None)
        except (FileExistsError, LookupError) as e:  # a used folder; an exercise whose function moved
            raise SystemExit(str(e)) from None
        print(f"[course] {a.out}: the project with exercise(s) {', '.join(str(e.n) for e in chosen)} blanked; "
              f"see EXERCISES.md, grade with: python {ROOT / 'course.py'} check {a.out}")
        return 0
    if a.cmd == "check":
        out = Path(a.out).resolve()
        # A folder without loss.py is no copy: say how to make one instead of an import error.
        if not (out / "loss.py").is_file():
            raise SystemExit(f"check: {out} is not a copy of the project (no loss.py); "
                             f"make one with: python course.py make {a.out}")
        # No number: every exercise, in the list's order.
        numbers = _numbers(a.n, "check N") or list(BY_N)
        # The student's folder first on sys.path: its tests import `loss` etc. from there.
        sys.path[:] = [str(out)] + [x for x in sys.path if Path(x or ".").resolve() != ROOT]
        results = grade(out, numbers, run_tests=not a.no_tests)
        print(report(results))
        return 0 if all(passed(r) for r in results.values()) else 1
    # lab: trains with the code of the folder this course.py sits in.
    return run_lab(a.n, a.steps, a.dry_run)


if __name__ == "__main__":
    sys.exit(main())
