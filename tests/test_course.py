"""course.py and course_checks.py: `make` blanks exactly the listed bodies, `check` fails
each blanked exercise and passes every other, restored bodies pass (the project's own tests
included), and a known mistake per exercise is caught with the hint that names it.

One `make` of all exercises is shared by the module; the two full `check` runs (with the
project's pytest tests) are subprocesses, the rest grade in this process without pytest."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import course
from conftest import ROOT

GRADED = sorted({e.file for e in course.EXERCISES})  # loss.py, entropy_control.py, ...


@pytest.fixture(scope="module")
def blanked(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course") / "all"
    course.make(out)
    return out


def restore(blanked_text: str, original: str, exercises: list) -> str:
    """Put the original bodies back where `make` left one `raise` line per span: what a
    student who wrote exactly the reference would hand in. Top to bottom, so the lines above
    a span are the original's again and its `raise` sits at the span's own first line."""
    spans = sorted({s for ex in exercises for s in course._edits(original, ex)})
    spans = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and o != s for o in spans)]
    out, orig = blanked_text.splitlines(keepends=True), original.splitlines(keepends=True)
    for a, b, _ in spans:
        assert out[a - 1].strip().startswith(course.MARK)
        out[a - 1: a] = orig[a - 1: b]
    return "".join(out)


def test_make_blanks_only_the_listed_bodies(blanked):
    names = course.project_files()
    # the kit travels with the copy (untracked or not): the copy's course.py imports course_checks
    assert {"EXERCISES.md", "course.py", "course_checks.py", "train.py"} <= set(names)
    for name in names:
        same = (blanked / name).read_bytes() == (ROOT / name).read_bytes()
        assert same == (name not in GRADED), name  # every other file byte for byte
    for ex in course.EXERCISES:
        text, orig = (blanked / ex.file).read_text(), ast.parse((ROOT / ex.file).read_text())
        if not ex.branches:  # (exercise 2's branches lie inside exercise 1's body, blanked whole here)
            assert f'{course.MARK}{ex.n}: {ex.title}; see EXERCISES.md")' in text
        for fn in ex.functions:  # the signature line and the docstring stay
            node = course._node(orig, fn, ex.file)
            assert (ROOT / ex.file).read_text().splitlines()[node.lineno - 1] in text.splitlines()
            doc = ast.get_docstring(node)
            assert doc is None or doc == ast.get_docstring(course._node(ast.parse(text), fn, ex.file))
    # the copy imports (so train.py would run once the bodies are written), the kit included
    proc = subprocess.run([sys.executable, "-c", "import loss, entropy_control, data_filter, eval, packing, train, course"],
                          cwd=blanked, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_check_fails_every_blanked_exercise_and_passes_the_restored_copy(blanked, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "course.py"), "check", str(blanked)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for ex in course.EXERCISES:
        assert f"Exercise {ex.n}: {ex.title} ({ex.section}) -- FAIL" in proc.stdout
    assert "NotImplementedError: Exercise 10: the chunked loss head" in proc.stdout
    assert "0 of 10 exercises pass" in proc.stdout

    # Restore every body in a copy of the blanked folder: byte-identical files, and all pass.
    fixed = tmp_path / "fixed"
    shutil.copytree(blanked, fixed)
    for name in GRADED:
        exs = [e for e in course.EXERCISES if e.file == name]
        text = restore((blanked / name).read_text(), (ROOT / name).read_text(), exs)
        assert text == (ROOT / name).read_text(), name
        (fixed / name).write_text(text)
    proc = subprocess.run([sys.executable, str(ROOT / "course.py"), "check", str(fixed)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 of 10 exercises pass" in proc.stdout and "project tests" in proc.stdout


@pytest.mark.parametrize("n", sorted(course.BY_N))
def test_one_blanked_exercise_fails_alone(n, tmp_path):
    """make --only n: exercise n fails, every other passes -- except a branch exercise
    inside a function that n blanks whole (exercise 2, the masks, inside exercise 1's body)."""
    course.make(tmp_path / "c", only=[n])
    res = course.grade(tmp_path / "c", sorted(course.BY_N), run_tests=False)
    failing = {m for m, r in res.items() if not course.passed(r)}
    ex = course.BY_N[n]
    inside = {m.n for m in course.EXERCISES if m.branches and not ex.branches and m.file == ex.file
              and set(m.functions) & set(ex.functions)}
    assert failing == {n} | inside, course.report(res)
    assert "not implemented yet" in res[n]["failures"][0][3]


# One deliberate mistake per exercise, patched into a copy of the reference file:
# (exercise, file text to replace, replacement, words the failing check's hint must contain).
MISTAKES = [
    (1, "r = rewards.double().view(-1, group_size)  # [P, G]", "r = rewards.double().view(1, -1)",
     "mean and std over the whole batch instead of the group"),
    (2, "keep = ~truncated.view(-1, group_size).bool()", "keep = keep", "Adv-Mask-After (statistics over the whole group)"),
    (3, "loss = -(objective * mask).sum() / denom.clamp(min=1)",
     "loss = -((objective * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()", "GRPO's mean over sequences (eq. 2.4)"),
    (3, "torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)", "torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_low)",
     "a symmetric clip with eps_low on both sides"),
    (4, "z = flat[start : start + rows].to(_acc_dtype(logits.dtype)) / temperature",
     "z = flat[start : start + rows].to(_acc_dtype(logits.dtype))", "the entropy at tau 1"),
    (5, "step = self.delta if below else -self.delta", "step = -self.delta if below else self.delta",
     "the controller with the sign flipped"),
    (6, "keep = (hi != lo).nonzero().flatten()", "keep = (hi > 0).nonzero().flatten()", "the groups with any correct response"),
    (7, "self.correct.get(prompt_id, 0.0) + float(sum(rewards))\n        self.seen[prompt_id] = self.seen.get(prompt_id, 0) + len(rewards)",
     "float(sum(rewards))\n        self.seen[prompt_id] = len(rewards)", "keeping only each prompt's last record"),
    (8, "vals.append(1.0 - (math.comb(k - n_ok, j) / math.comb(k, j) if k - n_ok >= j else 0.0))",
     "vals.append(1.0 - (1 - n_ok / k) ** j)", "the biased estimate 1 - (1 - c/k)^j"),
    (9, "r = min(range(n_ranks), key=lambda r: (load[r], r))", "r = i % n_ranks", "round-robin by position"),
    (10, "z.div_(T)  # dL/dlogits = dL/dz / tau, in place", "pass", "divided by tau once more"),
]


@pytest.mark.parametrize("n,old,new,hint", MISTAKES, ids=[f"ex{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_a_known_mistake_is_caught_with_its_hint(n, old, new, hint, tmp_path):
    for name in GRADED:
        shutil.copy2(ROOT / name, tmp_path / name)
    path = tmp_path / course.BY_N[n].file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} no longer appears once in {path.name}: update the mistake"
    path.write_text(text.replace(old, new))
    res = course.grade(tmp_path, [n], run_tests=False)[n]
    assert not course.passed(res)
    assert any(hint in f[3] for f in res["failures"]), course.report({n: res})
    hints = [line for line in course.report({n: res}).splitlines() if line.startswith("  hint:")]
    assert hints and all("eq. " in h or "§" in h for h in hints)  # every hint cites the report


def test_labs_run_make_figures_settings():
    common, runs, env = course.figure_runs()
    for lab in course.LABS.values():
        assert set(lab.runs) <= set(runs), f"lab {lab.n}: make_figures.sh has no run {set(lab.runs) - set(runs)}"
    cmds = course.lab_commands(3)
    adaptive, off = cmds[0], cmds[1]
    flags = adaptive[adaptive.index("train.py") + 1:]
    # make_figures.sh's common flags at the labs' size: D_R and D_T halved, lr doubled, T 64
    # appended (the script keeps the recipe's 128), nothing else.
    assert flags[: len(common) + 2] == course.lab_scale(common, course.LAB_SET) != common
    assert [(a, b) for a, b in zip(common, flags) if a != b] == [("8", "4"), ("8", "4"), ("2e-5", "4e-5")]
    assert "--max-response-len" not in common and flags[len(common):][:2] == ["--max-response-len", "64"]
    # The run's own flags last, with the lab's own change: delta 0.1 where the script has 0.05.
    assert flags[-8:] == ["--entropy-mode", "adaptive", "--target-entropy", env["TARGET"], "--entropy-delta", "0.1",
                          "--entropy-coef-max", "1.0"]
    assert runs["adaptive"][runs["adaptive"].index("--entropy-delta") + 1] == "0.05"
    assert flags[flags.index("--max-steps") + 1] == "10"
    # The run without control is lab 1's tau 1.0 run (same flags, same folder: reused).
    tau1 = course.lab_commands(1)[1]
    assert off[:4] + off[5:] == tau1[:4] + tau1[5:]  # all but the free --master_port
    assert off[-4:] == ["--entropy-mode", "off", "--temperature", "1.0"]
    assert cmds[2][-2:] == ["--target", env["TARGET"]]  # the entropy figure draws the target line
    # Lab 2 keeps the script's D_R/D_T = 2 (N_SGD 4 with N_reuse 2): mini-batch 4 of 8 becomes 2 of 4.
    reuse = course.lab_commands(2)[0]
    assert reuse[-6:] == ["--temperature", "1.0", "--n-reuse", "2", "--mini-batch-size", "2"]


def test_a_lab_set_the_run_lacks_is_appended():
    # A student editing LABS (EXERCISES.md, lab 3 question 3) may set a flag the run does not
    # give: it must reach train.py, not be dropped.
    flags = ["--mini-batch-size", "4", "--temperature", "1.0"]
    assert course.lab_scale(flags, {"--entropy-delta": "0.2"}) == ["--mini-batch-size", "2", "--temperature", "1.0",
                                                                   "--entropy-delta", "0.2"]


def test_lab_commands_parse_to_the_labs_size():
    """Every lab run's flags go through train.py's own parser (recipes.parse_config), so a
    renamed flag fails here rather than in a student's first lab; the configs are the
    labs' size: D_R 4, T 64, lr 4e-5, N_SGD 4 only in lab 2's first run."""
    import recipes

    cfgs = {}
    for n, lab in course.LABS.items():
        runs = [c for c in course.lab_commands(n) if "train.py" in c]
        assert len(runs) == 2
        for i, cmd in enumerate(runs):
            cfg = cfgs[n, i] = recipes.parse_config(cmd[cmd.index("train.py") + 1:])
            assert (cfg.recipe, cfg.rollout_batch_size, cfg.group_size, cfg.max_response_len, cfg.lr) == ("tiny", 4, 8, 64, 4e-5)
            assert cfg.max_steps == lab.steps and cfg.eval_k == 0
            n_sgd = cfg.n_reuse * cfg.rollout_batch_size // cfg.mini_batch_size
            assert n_sgd == (4 if (n, i) == (2, 0) else 1), (n, i, n_sgd)
            assert cfg.entropy_mode == ("adaptive" if (n, i) == (3, 0) else "off")
            assert cfg.temperature == (0.6 if (n, i) == (1, 0) else 1.0)
    adaptive = cfgs[3, 0]
    assert (adaptive.entropy_delta, adaptive.entropy_coef_max, adaptive.target_entropy) == (0.1, 1.0, 1.5)


def test_bad_input_is_named(blanked, tmp_path):
    with pytest.raises(SystemExit, match=f"{blanked} exists and is not empty"):
        course.main(["make", str(blanked)])
    with pytest.raises(SystemExit, match="no exercise 11"):
        course.main(["check", str(blanked), "11"])
    with pytest.raises(SystemExit, match="not a copy of the project"):
        course.main(["check", str(tmp_path)])
    # Grading against a blanked reference would pass everything: refused, with the way out.
    with pytest.raises(SystemExit, match="itself a blanked copy"):
        course.grade(blanked, [1], run_tests=False, root=blanked)
