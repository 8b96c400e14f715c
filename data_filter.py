"""The data filters of training time: which prompts and which groups a step trains on.

Skywork-OR1 report §3.1 (Data Collection) and §6.2; the released training scripts.

* Offline selection (§6.2): keep rows the start model solved 1..15 of 16 times, by the
  counts stored in extra_info.model_difficulty[<model>] (`select_by_difficulty`); code
  rows listed twice in the mix (`upsample_code`), as the released scripts do.
* Rejection sampling (§3.1): drop every group whose G rewards are all equal: its
  advantages (eq. 2.5) are all zero, so it adds nothing to the policy gradient but
  still dilutes the entropy/KL terms. The batch shrinks; it is not refilled.
* Online filtering (§3.1): at the start of each stage, drop prompts the actor answered
  correctly G/G times during the previous stage. This needs per-prompt accuracy recorded
  *before* rejection sampling (which throws those groups away) -- `PromptStats`.

Loading and checking rows is data.py; the offline §6 pipeline that builds the counts
(prepare, difficulty, judge) is data_prep.py.

This file imports torch only. Exports: select_by_difficulty, upsample_code,
rejection_sample, PromptStats.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

def select_by_difficulty(rows: list[dict], model: str, low: int = 1, high: int = 15, with_counts: bool = False):
    """Keep rows with low <= extra_info.model_difficulty[model] <= high (released: 1..15,
    for math and code alike). A row without a count for `model` is DROPPED, as the
    released filter does (SkyworkAI/Skywork-OR1 or1_scripts/data_preprocess/
    download_and_filter_data_{7b,32b}.py, filter_fn: no extra_info, no model_difficulty
    or no entry for the model -> dropped). with_counts=True also returns
    {"in", "kept", "no_count", "out_of_range"}.

    >>> rows = [{"extra_info": {"model_difficulty": {"m": d}}} for d in (0, 3, 16)] + [{"extra_info": {}}]
    >>> select_by_difficulty(rows, "m", with_counts=True)[1]
    {'in': 4, 'kept': 1, 'no_count': 1, 'out_of_range': 2}
    """
    out, no_count = [], 0
    for r in rows:
        d = (r.get("extra_info") or {}).get("model_difficulty") or {}
        if isinstance(d, str):
            d = json.loads(d)
        if d.get(model) is None:
            no_count += 1
        elif low <= int(d[model]) <= high:
            out.append(r)
    if not with_counts:
        return out
    return out, {"in": len(rows), "kept": len(out), "no_count": no_count, "out_of_range": len(rows) - len(out) - no_count}


def upsample_code(rows: list[dict], factor: int) -> list[dict]:
    """Code rows listed `factor` times (released mix: 2), math rows once; 0 drops code."""
    return [r for r in rows for _ in range(factor if r["ability"] == "code" else 1)]


def rejection_sample(rewards: torch.Tensor, group_size: int, with_counts: bool = False):
    """Indices of the groups to keep: those whose rewards are not all equal (§3.1).
    with_counts=True also returns the group counts {"kept", "all_correct", "all_wrong"}.

    >>> rejection_sample(torch.tensor([1., 0., 1., 1., 0., 0.]), 2)
    tensor([0])
    >>> rejection_sample(torch.tensor([1., 0., 1., 1., 0., 0.]), 2, with_counts=True)[1]
    {'kept': 1, 'all_correct': 1, 'all_wrong': 1}
    """
    # A group is informative iff its rewards differ: max != min (works for non-binary too).
    r = rewards.view(-1, group_size)  # [P, G]
    hi, lo = r.max(dim=1).values, r.min(dim=1).values
    keep = (hi != lo).nonzero().flatten()
    if not with_counts:
        return keep
    same = hi == lo
    return keep, {"kept": len(keep), "all_correct": int((same & (hi > 0)).sum()), "all_wrong": int((same & (hi <= 0)).sum())}


class PromptStats:
    """Per-prompt accuracy during a stage (before rejection sampling), for online filtering.

    Keyed by a stable prompt id (the row's position in the stage's dataset).
    """

    def __init__(self):
        self.correct: dict[int, float] = {}
        self.seen: dict[int, int] = {}

    def record(self, prompt_id: int, rewards: list[float]) -> None:
        # Sums, not a last value: a prompt sampled in several steps of a stage counts as
        # solved only if every one of its samples was correct.
        self.correct[prompt_id] = self.correct.get(prompt_id, 0.0) + float(sum(rewards))
        self.seen[prompt_id] = self.seen.get(prompt_id, 0) + len(rewards)

    def solved(self) -> set[int]:
        """Prompts answered correctly every time they were sampled (accuracy 1)."""
        return {p for p, n in self.seen.items() if n > 0 and self.correct[p] >= n}

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"correct": self.correct, "seen": self.seen}, f)
        os.replace(tmp, path)  # atomic

    @classmethod
    def load(cls, path: str) -> "PromptStats":
        s = cls()
        d = json.loads(Path(path).read_text())
        s.correct = {int(k): v for k, v in d["correct"].items()}
        s.seen = {int(k): v for k, v in d["seen"].items()}
        return s

    def merge(self, other: "PromptStats") -> None:
        for p, n in other.seen.items():
            self.seen[p] = self.seen.get(p, 0) + n
            self.correct[p] = self.correct.get(p, 0.0) + other.correct[p]

    @classmethod
    def merged(cls, states: list[dict]) -> "PromptStats":
        """One PromptStats from several state_dicts (every rank's, or every writer's of a
        checkpoint): counts add up per prompt."""
        out = cls()
        for state in states:
            part = cls()
            part.load_state_dict(state)
            out.merge(part)
        return out

    def state_dict(self) -> dict:
        return {"correct": dict(self.correct), "seen": dict(self.seen)}

    def load_state_dict(self, state: dict) -> None:
        self.correct = {int(k): float(v) for k, v in state["correct"].items()}
        self.seen = {int(k): int(v) for k, v in state["seen"].items()}


