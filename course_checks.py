"""The graded comparisons of the course kit: per exercise, the student's function against this project's.

Idea: a student's body is right when it returns what the project's own body returns, on
inputs chosen to expose the usual mistakes. So every check here calls one function twice,
once from the student's copy and once from the full project (the reference), and compares
the two results; no expected number is written down by hand. Each failure carries the
expected value, the student's value and a hint that cites the report's equation; when the
student's value equals a known wrong variant (computed here, e.g. a batch-wide std) the
hint names that mistake.

Report sections, one check function per exercise of course.py's EXERCISES:
    1  group advantages                    §2 eq. 2.5
    2  truncation masks of the advantages  §3.2.3 (Adv-Mask-Before / -After)
    3  token-level PPO-clip loss           §3.1 eq. 3.1, clip-higher §4.5, k3 KL §3.2.6
    4  log-probs and entropy at tau        eq. 3.1's H_t, §3.2.4
    5  adaptive entropy control            §3.2.5 eq. 3.2
    6  rejection sampling                  §3.1 Data Collection 2
    7  online filtering between stages     §3.1 Data Collection 1
    8  unbiased pass@k and avg@k           §8.1
    9  token-balanced ranks, micro-batches §3.1 step 8
   10  the chunked head's backward         eq. 3.1 at long context

Inputs: random (fixed seeds, so a failure repeats) and edge cases: empty input, all-equal
groups, a group of one, truncated responses, temperatures != 1, bf16/float64 dtypes,
all-padding masks, bad arguments that must raise. Every check receives M, a namespace of
modules (M.loss, M.entropy_control, M.data_filter, M.eval, M.packing) loaded by course.py.

Imports: torch only (no trainer file; course.py loads those by path). No cycle: course.py
imports this file, never the reverse. Exports: Grader, CHECKS ({exercise n: check}),
compare(n, student, reference), NOT_IMPLEMENTED (the hint of a still-blanked body).
"""

from __future__ import annotations

import contextlib
import math
import random
from types import SimpleNamespace

import torch

# The hint of the one failure a still-blanked body gets; course.py's report prints it as is
# (it cites no equation) and its grader stops counting the project's tests against it.
NOT_IMPLEMENTED = "not implemented yet"


# ------------------------------------------------------------------------------------------
# comparing and printing values
# ------------------------------------------------------------------------------------------


def _same(got, want, tol: float) -> bool:
    """Equal within tol (absolute and relative), recursively through lists, tuples and dicts.
    Tensors must also match in shape and dtype: the trainer relies on both (a float64
    advantage tensor would silently upcast the loss; a [B, 1] one would broadcast)."""
    if isinstance(want, torch.Tensor):
        # Compare in float64 so a float32 result is judged by its values, not by rounding of
        # the comparison itself; shape and dtype are compared exactly first.
        return (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
                and bool(torch.allclose(got.detach().double(), want.detach().double(), atol=tol, rtol=tol)))
    if isinstance(want, float):
        # A Python number where the reference returns one (pass@k, a coefficient); a bool is
        # refused even though True == 1.0, since it means the student returned a verdict.
        return isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= tol * (1 + abs(want))
    if isinstance(want, (list, tuple)):
        # Checks return several results as a list (loss, gradients, metrics): all must match.
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(_same(a, b, tol) for a, b in zip(got, want))
    if isinstance(want, dict):
        # Metrics and state dicts: the same keys, each value compared as above.
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same(got[k], want[k], tol) for k in want)
    return got == want  # ints, bools, strings, None: exact


def _fmt(x) -> str:
    """A value as the report prints it: tensors as shape, dtype and their first 8 numbers."""
    if isinstance(x, torch.Tensor):
        # e.g. "tensor [8] float32 [1.5, -0.5, ...]": shape and dtype first, since a wrong
        # shape or dtype fails a check even when the numbers agree.
        v = [round(a, 4) if isinstance(a, float) else a for a in x.detach().flatten()[:8].tolist()]
        return f"tensor {list(x.shape)} {str(x.dtype)[6:]} {v}{' ...' if x.numel() > 8 else ''}"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(a) for a in x[:8]) + (", ..." if len(x) > 8 else "") + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in x.items()) + "}"
    return repr(x)


# ------------------------------------------------------------------------------------------
# the grader: run a check on both sides, record what differs
# ------------------------------------------------------------------------------------------


class _Stop(Exception):
    """The student's function is still blanked: one failure says so, the rest are skipped."""


class Grader:
    """Runs one exercise's checks: each calls `run(M)` with the student's modules and with
    the reference modules and compares. `wrong` lists (what, value) of known mistakes: a
    student result equal to one of them names the mistake in the hint.

    failures: [(check name, expected text, got text, hint)], in the order the checks ran.
    count:    how many comparisons ran (the report prints it)."""

    def __init__(self, stu: SimpleNamespace, ref: SimpleNamespace):
        self.stu, self.ref, self.failures, self.count = stu, ref, [], 0

    def _student(self, name, run):
        """(result, None) from the student's side, or (None, "Error: message")."""
        try:
            return run(self.stu), None
        except NotImplementedError as e:
            # The body `make` left: every further check would say the same, so stop here.
            self.failures.append((name, "an implementation", f"NotImplementedError: {e}", NOT_IMPLEMENTED))
            raise _Stop from None
        except Exception as e:  # noqa: BLE001 -- any error of the student's code is a result to report
            return None, f"{type(e).__name__}: {e}"

    def expect(self, name: str, run, hint: str, tol: float = 1e-5, wrong=()):
        """Compare run(student) with run(reference) within tol; on a difference record the
        failure, its hint extended by the name of any known mistake the result equals."""
        self.count += 1
        want = run(self.ref)  # the reference runs first: an error there is the kit's bug, raised
        got, err = self._student(name, run)
        if err is None and _same(got, want, tol):
            return
        for what, value in wrong:
            if err is None and _same(got, value, tol):
                hint = f"{hint} (Your result equals {what}.)"
        self.failures.append((name, _fmt(want), err or _fmt(got), hint))

    def raises(self, name: str, run, exc: type, hint: str):
        """Bad input must raise `exc` (the house rule: a clear error naming the field)."""
        self.count += 1
        got, err = self._student(name, run)
        if err is None or not err.startswith(exc.__name__):
            self.failures.append((name, f"{exc.__name__} raised", err or f"returned {_fmt(got)}", hint))


def compare(n: int, stu: SimpleNamespace, ref: SimpleNamespace) -> Grader:
    """Run exercise n's checks on the student's modules against the reference's; the
    returned Grader holds the failures and the count. A blanked body ends the run early."""
    g = Grader(stu, ref)
    with contextlib.suppress(_Stop):
        CHECKS[n](g)
    return g


# ------------------------------------------------------------------------------------------
# the checks of each exercise (M is a namespace of modules: M.loss, M.eval, ...)
# ------------------------------------------------------------------------------------------


def _check_1(g: Grader):
    # One group first (a batch-wide std is right there), then two groups (it is not); then
    # the released code's edge cases (all-equal groups, a group of one), random binary and
    # non-binary rewards, dtype, empty input and a shape error.
    t = torch.tensor
    # rewards are [N] = [P * G], group g in rows g*G .. g*G+G-1 (the order vLLM returns them);
    # the reference's answer is [N] in the rewards' floating dtype.
    gen = torch.Generator().manual_seed(1)
    def biased(r, G):  # the mistake: the biased std (divide by G, numpy's default)
        r = r.view(-1, G)
        return ((r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1)

    # The released code divides by torch.std (unbiased, G-1); a student porting numpy's
    # np.std (biased, G) is off by sqrt(G/(G-1)), 15% at G = 4: large enough to catch.
    hint = ("eq. 2.5: A_i = (r_i - mean(r)) / (std(r) + eps) over response i's own group of G, unbiased std "
            "(divide by G-1) as the released code")
    # One group: the group IS the batch, so only the std's divisor can be wrong here.
    r1 = t([1.0, 0, 0, 0])
    g.expect("one group of 4, rewards [1, 0, 0, 0]", lambda M: M.loss.group_advantages(r1, 4), hint,
             wrong=[("the biased std (divide by G)", biased(r1, 4))])
    # Two groups of different means: the batch-wide mean/std now differ from the groups'.
    r2 = t([1.0, 0, 0, 0, 1, 1, 0, 0])
    whole = (r2 - r2.mean()) / (r2.std() + 1e-6)
    g.expect("two groups of 4: [1,0,0,0] and [1,1,0,0]", lambda M: M.loss.group_advantages(r2, 4),
             "eq. 2.5 normalises within each group: rows g*G .. g*G+G-1 are group g; view the rewards as [P, G] and reduce over G",
             wrong=[("mean and std over the whole batch instead of the group", whole)])
    # All-equal groups carry no signal (eq. 2.5's numerator is 0); the trainer's rejection
    # sampling drops them, but the function itself must still return 0, not nan.
    g.expect("all-equal groups (all correct, all wrong) get 0", lambda M: M.loss.group_advantages(t([1.0] * 4 + [0.0] * 4), 4),
             "an all-equal group has r - mean(r) = 0 and std 0: A = 0/(0 + eps) = 0, never nan")
    g.expect("groups of one response (G = 1)", lambda M: M.loss.group_advantages(t([1.0, 0.0]), 1),
             "a group of one has no spread: the released code uses mean 0 and std 1, so A = r / (1 + eps)")
    # Random binary rewards [128] as the verifier gives (P = 16 prompts x G = 8); then
    # continuous rewards, where no special case of {0, 1} can hide a mistake.
    rand = torch.randint(0, 2, (128,), generator=gen).float()
    g.expect("16 random binary groups of 8", lambda M: M.loss.group_advantages(rand, 8), hint,
             wrong=[("the biased std (divide by G)", biased(rand, 8))])
    cont = torch.rand(30, generator=gen)
    g.expect("non-binary rewards, G = 5, eps = 0.1", lambda M: M.loss.group_advantages(cont, 5, eps=0.1),
             "eq. 2.5 holds for any reward; eps is added to the std (not the variance)")
    g.expect("float64 rewards in, float64 out", lambda M: M.loss.group_advantages(cont.double(), 5),
             "return the rewards' floating dtype (float32 for integer rewards)")
    # A step whose every group was rejected reaches the loss with N = 0; a bad N must name
    # both numbers (house rule: bad input -> a clear error).
    g.expect("empty batch", lambda M: M.loss.group_advantages(torch.zeros(0), 4), "zero prompts: an empty [0] tensor")
    g.raises("5 rewards with group_size 4", lambda M: M.loss.group_advantages(torch.zeros(5), 4), ValueError,
             "N must be a multiple of group_size: raise ValueError naming both (bad input -> a clear error)")


def _check_2(g: Grader):
    # The docstring's two cases, random groups in both modes, a group left with one counted
    # response, and "none" (the default the trainer runs) ignoring the flags.
    t = torch.tensor
    # truncated: [N] bool, True where the response hit the length limit (§3.2.3).
    ga = lambda M, *a, **k: M.loss.group_advantages(*a, **k)  # noqa: E731
    # Before: the group's statistics come from the 2 counted responses [1, 0] -> +-0.707;
    # after: from all 4 ([1, 0, 0, 0], mean 0.25, std 0.5) -> [1.5, -0.5], then 0 for the
    # truncated two. The 'after' numbers are the mistake of a student who masks too late.
    r, tr = t([1.0, 0, 0, 0]), t([False, False, True, True])
    g.expect("Adv-Mask-Before, [1,0,0,0] with the last two truncated", lambda M: ga(M, r, 4, truncated=tr, mask_mode="before"),
             "§3.2.3 Adv-Mask-Before: truncated responses are left out of the group's mean and std, and get advantage 0",
             wrong=[("Adv-Mask-After (statistics over the whole group)", t([1.5, -0.5, 0.0, 0.0]))])
    g.expect("Adv-Mask-After, [1,1,0,0] with the last truncated",
             lambda M: ga(M, t([1.0, 1, 0, 0]), 4, truncated=t([False, False, False, True]), mask_mode="after"),
             "§3.2.3 Adv-Mask-After: mean and std over the whole group (eq. 2.5), then the truncated responses' "
             "advantages set to 0")
    # Random: 10 groups of 6, a truncation rate of 30% (a run at the length limit), so some
    # groups keep 0 or 1 counted responses -- the edge cases of the 'before' statistics.
    gen = torch.Generator().manual_seed(2)
    rr, tt = torch.randint(0, 2, (60,), generator=gen).float(), torch.rand(60, generator=gen) < 0.3
    for mode in ("before", "after"):
        g.expect(f"10 random groups of 6, 30% truncated, mask_mode={mode!r}",
                 lambda M, m=mode: ga(M, rr, 6, truncated=tt, mask_mode=m),
                 f"§3.2.3 Adv-Mask-{mode.capitalize()}; every truncated response ends with advantage 0")
    g.expect("before: a group with one response left",
             lambda M: ga(M, t([1.0, 0, 0]), 3, truncated=t([False, True, True]), mask_mode="before"),
             "a group with one counted response is like a group of one: mean 0, std 1")
    # MAGIC itself trains with mask_mode 'none' (§3.2.3: no advantage mask), so the flags
    # passed in must then change nothing.
    g.expect("mask_mode='none' ignores the truncation flags", lambda M: ga(M, rr, 6, truncated=tt, mask_mode="none"),
             "MAGIC's choice (§3.2.3): truncated responses keep reward 0 and a normal, negative advantage")
    g.raises("a mask without the truncated flags", lambda M: ga(M, r, 4, mask_mode="after"), ValueError,
             "mask_mode 'before'/'after' needs `truncated`: raise ValueError naming it")
    g.raises("an unknown mask_mode", lambda M: ga(M, r, 4, truncated=tr, mask_mode="middle"), ValueError,
             "mask_mode must be 'none', 'before' or 'after': raise ValueError naming the value")


# The loss's inputs, all float64 [B, T] (advantages [B]): B = 4 responses of T = 6
# token positions, the policy loss's own layout (loss.py policy_loss).
def _loss_inputs(seed: int, B: int = 4, T: int = 6):
    gen = torch.Generator().manual_seed(seed)
    # log pi_old in [-3, 0]; log pi = log pi_old + U(-0.6, 0.6), so rho = exp(diff) spans
    # 0.55 .. 1.8 and tokens fall on both sides of [1 - eps_low, 1 + eps_high].
    old = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
    new = old + (torch.rand(B, T, generator=gen, dtype=torch.float64) - 0.5) * 1.2  # ratios ~0.55 .. 1.8: both clips bind
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    # About a quarter padding; the first token always counts, so no row is empty (the
    # all-padding case is a check of its own).
    mask = (torch.rand(B, T, generator=gen) < 0.75).double()
    mask[:, 0] = 1
    # H_t in [0, 2] nats: any values do, since the loss is linear in H_t.
    ent = torch.rand(B, T, generator=gen, dtype=torch.float64) * 2
    return new, old, adv, mask, ent


# The loss and its gradients with respect to log pi [B, T] and (with a bonus) H_t [B, T]:
# eq. 3.1's backward is what the optimizer sees, so it is compared, not only the value.
def _loss_and_grads(M, seed=3, **kw):
    new, old, adv, mask, ent = _loss_inputs(seed)
    lp, e = new.clone().requires_grad_(), ent.clone().requires_grad_()
    loss, m = M.loss.policy_loss(lp, old, adv, mask, entropy=e, **kw)
    loss.backward()
    return loss.detach(), lp.grad, e.grad if kw.get("entropy_coef") else None, m


def _check_3(g: Grader):
    # float64 inputs with ratios 0.55-1.8 and random signs of A, so both clips bind; the
    # mistakes students make most (a symmetric clip, GRPO's per-sequence mean) are computed
    # here so the hint can name them. Values, gradients and metrics are all compared.
    new, old, adv, mask, ent = _loss_inputs(3)
    # pl: the scalar loss only (policy_loss returns (loss, metrics)).
    pl = lambda M, *a, **k: M.loss.policy_loss(*a, **k)[0].detach()  # noqa: E731

    def ppo(clip_hi, agg="tok"):  # the known mistakes, computed here
        # rho [B, T]; eps_low is fixed at 0.2 (the default), eps_high varies.
        ratio = (new - old).exp()
        obj = torch.minimum(ratio * adv[:, None], ratio.clamp(0.8, 1 + clip_hi) * adv[:, None]) * mask
        return -(obj.sum() / mask.sum()) if agg == "tok" else -(obj.sum(1) / mask.sum(1)).mean()

    # On policy (the first SGD step of every rollout) the clip cannot bind: the loss is the
    # advantage averaged over real tokens, the simplest reading of eq. 3.1.
    g.expect("on policy (ratio 1): loss = -mean of A over tokens",
             lambda M: pl(M, old, old, adv, mask), "eq. 3.1 with rho = 1: -(1/N_tok) sum_tokens A_i")
    g.expect("ratios 0.55-1.8, eps_low 0.2, eps_high 0.28: the loss",
             lambda M: pl(M, new, old, adv, mask, clip_high=0.28),
             "eq. 3.1: min(rho*A, clip(rho, 1 - eps_low, 1 + eps_high)*A); clip-higher (§4.5) has its own upper bound eps_high",
             wrong=[("a symmetric clip with eps_low on both sides", ppo(0.2)),
                    ("GRPO's mean over sequences (eq. 2.4) instead of over tokens", ppo(0.28, "seq"))])
    # Clipping shows in the gradient before the value: a clamp on the product rho*A, or a
    # .detach() on rho, gives the right loss on some tokens and the wrong gradient on all.
    g.expect("the gradient with respect to log pi",
             lambda M: _loss_and_grads(M, clip_high=0.28)[1],
             "where the clip binds (rho outside [1-eps_low, 1+eps_high] on the side A pushes) that token has zero gradient: "
             "take torch.minimum of the two terms, clamp only the ratio, keep rho = exp(log pi - log pi_old) differentiable")
    g.expect("clip fractions (metrics clip_frac_low / clip_frac_high)",
             lambda M: [M.loss.policy_loss(new, old, adv, mask, clip_high=0.28)[1][k] for k in ("clip_frac_low", "clip_frac_high")],
             "clip_frac_low: share of real tokens with rho < 1-eps_low and A < 0; clip_frac_high: rho > 1+eps_high and A > 0")
    # The bonus enters as -alpha * H_t per token (minimised loss = minus eq. 3.1's objective):
    # its gradient with respect to H is -alpha / N_tok on real tokens, 0 on padding.
    g.expect("entropy bonus alpha = 0.01: loss, d/d log pi, d/dH",
             lambda M: _loss_and_grads(M, clip_high=0.28, entropy_coef=0.01)[:3],
             "eq. 3.1 adds alpha * H_t to each token's objective inside the token sum; the loss is minus the objective")
    g.expect("the step's global token count: num_tokens = 57",
             lambda M: pl(M, new, old, adv, mask, num_tokens=57.0),
             "eq. 3.1 divides by N_tok, the token count of the whole SGD step (all micro-batches, all ranks), given as num_tokens")
    # Gradient accumulation: train.py splits a step into micro-batches (and ranks) and sums
    # their losses, so each must divide by the step's total token count, not its own.
    n_tok = float(mask.sum())
    halves = lambda M: sum(pl(M, new[i], old[i], adv[i], mask[i], num_tokens=n_tok) for i in ([0, 1], [2, 3]))  # noqa: E731
    g.expect("two micro-batches with the step's num_tokens sum to the one-batch loss", halves,
             "sum of micro-batch losses = one-batch loss only when every micro-batch divides by the step's N_tok "
             "(token-level mean, eq. 3.1)")
    # Length bias: GRPO's per-sequence mean weighs a 1-token response 4x more per token than
    # a 4-token one; eq. 3.1's token mean does not (§3.1's reason for the token-level loss).
    m2, a2 = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1]]), torch.tensor([1.0, -1.0])
    g.expect("no length bias: a 1-token and a 4-token response, A = +1 / -1",
             lambda M: pl(M, torch.zeros(2, 4), torch.zeros(2, 4), a2, m2),
             "eq. 3.1 weighs every token the same (no per-response 1/|y|): -(1 - 4)/5 = 0.6, where GRPO's eq. 2.4 gives 0")
    g.expect("agg='seq-mean-token-mean' (GRPO, eq. 2.4)", lambda M: pl(M, new, old, adv, mask, agg="seq-mean-token-mean"),
             "eq. 2.4: mean over each response's tokens, then over responses (num_tokens, if given, is the step's sequence count)")
    g.expect("per-token advantages [B, T]", lambda M: pl(M, new, old, adv[:, None] * ent, mask),
             "advantages may be [B] (per response, broadcast over T) or [B, T] (per token)")
    # MAGIC has no KL term (§3.2.6: beta = 0, no reference model); the ablation must still match.
    ref = old + 0.3
    g.expect("k3 KL ablation, kl_coef 0.1: loss and metric kl_ref",
             lambda M: [(r := M.loss.policy_loss(new, old, adv, mask, ref_logprobs=ref, kl_coef=0.1))[0].detach(), r[1]["kl_ref"]],
             "§3.2.6 ablation: k3 = exp(ref - lp) - (ref - lp) - 1 per token, clamped to [-10, 10], subtracted times kl_coef")
    g.expect("an all-padding micro-batch (mask 0) gives 0, not nan", lambda M: pl(M, new, old, adv, torch.zeros_like(mask)),
             "clamp the divisor to >= 1: the trainer's zero-weight dummy micro-batches have no real tokens")
    # A misspelt aggregation must not silently fall back to one of the two.
    g.raises("agg='sum'", lambda M: pl(M, new, old, adv, mask, agg="sum"), ValueError,
             "agg must be 'token-mean' or 'seq-mean-token-mean': raise ValueError naming the value")


def _check_4(g: Grader):
    # Logits scaled by 3 so the temperature changes the answer noticeably; bf16 and float64
    # inputs for the accumulation dtype; few-row chunks for the chunked loop.
    gen = torch.Generator().manual_seed(4)
    # logits [B=2, T=5, V=13], toks [2, 5]: every function here maps [..., V] -> [...].
    logits, toks = torch.randn(2, 5, 13, generator=gen) * 3, torch.randint(0, 13, (2, 5), generator=gen)
    # vLLM samples from softmax(logits / tau); the trainer's log pi must be that same
    # distribution, else the loss improves a policy other than the one that sampled.
    hint_t = ("divide the logits by the sampling temperature first (z = logits / tau): the policy trained is the one "
              "that sampled (§3.2.4)")
    g.expect("log pi(y_t) at tau 1", lambda M: M.loss.token_logprobs(logits, toks),
             "log pi(y_t) = z[y_t] - logsumexp(z): gather, not softmax then log")
    g.expect("log pi(y_t) at tau 0.6", lambda M: M.loss.token_logprobs(logits, toks, 0.6), hint_t,
             wrong=[("the log-probs at tau 1", torch.log_softmax(logits, -1).gather(-1, toks[..., None])[..., 0])])
    # A bf16 model gives bf16 logits; bf16 keeps ~3 significant digits, so the sums run in
    # float32 and the tolerance is looser here (the reference rounds the same inputs).
    g.expect("bf16 logits give float32 log-probs", lambda M: M.loss.token_logprobs(logits.bfloat16(), toks, 0.7),
             "compute in float32 at least (bf16 logsumexp loses digits) and return float32", tol=1e-4)
    g.expect("an empty batch", lambda M: M.loss.token_logprobs(torch.zeros(0, 3, 13), torch.zeros(0, 3, dtype=torch.long)),
             "B = 0: an empty [0, T] tensor")
    # The entropy is over the full vocabulary (not the sampled token's -log p): it is what
    # the controller of §3.2.5 measures and the bonus of eq. 3.1 raises.
    hint_h = "eq. 3.1's H_t = logsumexp(z) - sum_v softmax(z)_v z_v over the full vocabulary, z = logits / tau"
    g.expect("entropy of uniform logits is log V", lambda M: M.loss.entropy_from_logits(torch.zeros(3, 7)), hint_h)
    g.expect("entropy at tau 1, [2, 5, 13]", lambda M: M.loss.entropy_from_logits(logits), hint_h)
    g.expect("entropy at tau 0.6", lambda M: M.loss.entropy_from_logits(logits, 0.6), hint_t,
             wrong=[("the entropy at tau 1", torch.distributions.Categorical(logits=logits).entropy())])
    # chunk_elems bounds the [rows, V] float32 buffers (at V = 49152 and 32K tokens the full
    # softmax would be 6 GiB); 26 elements = 2 rows of 13, so 10 rows take 5 chunks.
    g.expect("entropy in many chunks (chunk_elems = 2 rows)", lambda M: M.loss.entropy_from_logits(logits, 0.8, chunk_elems=26),
             "chunks of rows must give the same numbers as one pass: concatenate the pieces in order and reshape "
             "to logits.shape[:-1]")
    g.expect("entropy of float64 logits stays float64", lambda M: M.loss.entropy_from_logits(logits.double()),
             "accumulate in promote_types(dtype, float32): float64 stays float64")
    g.expect("entropy of an empty [0, V] input", lambda M: M.loss.entropy_from_logits(torch.zeros(0, 13)),
             "no rows: an empty [0] tensor")

    # The gradient of sum(H) with respect to the logits [2, 5, 13], in float64.
    def grad(M):
        x = logits.double().clone().requires_grad_()
        M.loss.entropy_from_logits(x, 0.9).sum().backward()
        return x.grad

    g.expect("the entropy's gradient", grad,
             "the entropy must be differentiable (the bonus of eq. 3.1 back-propagates through it): no .detach()/.item()")


def _check_5(g: Grader):
    # Each trajectory returns [coef before any step, coef after each step, c, active,
    # last_entropy]: the gate, the bounds and the one-step lag all show up in it.
    def traj(M, ents, **kw):
        # A fresh controller per run; its coef before any update is 0 (no measurement yet).
        ctl = M.entropy_control.AdaptiveEntropyController(**kw)
        return [float(ctl.coef)] + [float(ctl.update(e)) for e in ents] + [float(ctl.c), bool(ctl.active), ctl.last_entropy]

    hint = ("eq. 3.2: c_{k+1} = clip(c_k + delta) if e_k < tgt else clip(c_k - delta); the bonus alpha = c_{k+1} "
            "only while e_k < tgt")
    def flipped(ents, target, delta, lo, hi):  # eq. 3.2 with the step's sign flipped: c falls below the target
        # Same trajectory layout as traj(): coef before, coef after each step, c, active, e_last.
        c, out = 0.0, [0.0]
        for e in ents:
            c = min(max(c + (-delta if e < target else delta), lo), hi)
            out.append(c if e < target else 0.0)
        return out + [c, ents[-1] < target, ents[-1]]

    # The docstring's worked example: c = 0.005, 0.01, 0.005 (gated off: 0.0), 0.01.
    ex = [0.15, 0.18, 0.25, 0.10]
    g.expect("worked example: target 0.2, delta 0.005, entropies 0.15 0.18 0.25 0.10",
             lambda M: traj(M, ex, target=0.2, delta=0.005, coef_max=1.0), hint,
             wrong=[("the controller with the sign flipped (c falls while entropy is below target)",
                     flipped(ex, 0.2, 0.005, 0.0, 1.0))])
    # The released setting (delta 1e-4, bound 0.005): c saturates after 50 steps and must
    # stay at the bound; one step above then lowers c by delta but switches the bonus off.
    g.expect("bounded: 100 steps below target, then one above (released setting)",
             lambda M: traj(M, [0.05] * 100 + [0.5], target=0.2, delta=1e-4, coef_max=0.005)[-5:],
             "clip c into [coef_min, coef_max] after every step; above the target the bonus is off (alpha 0) but c is kept")
    g.expect("entropy exactly at the target counts as not below",
             lambda M: traj(M, [0.2, 0.1, 0.2], target=0.2, delta=0.01, coef_max=1.0),
             "'below' is e_k < tgt, strictly")
    # Random entropies crossing the target often: the gate and both bounds all bind.
    rnd = random.Random(5)
    ents = [rnd.uniform(0.0, 0.6) for _ in range(60)]
    g.expect("60 random entropies around target 0.3, bounds [0.01, 0.04], init 0.02",
             lambda M: traj(M, ents, target=0.3, delta=0.004, coef_min=0.01, coef_max=0.04, init=0.02), hint)
    g.expect("fixed mode ignores entropy", lambda M: traj(M, [5.0, 0.0], fixed_coef=1e-3)[:3],
             "fixed_coef (the §4.5 ablation): coef is that constant at every step")
    g.raises("a nan entropy", lambda M: M.entropy_control.AdaptiveEntropyController().update(math.nan), ValueError,
             "a non-finite entropy must raise ValueError (a nan would silently freeze the controller)")


def _check_6(g: Grader):
    # Indices are compared as lists: the trainer calls .tolist() on them.
    # Rewards [N] in groups of G as in exercise 1; returns the kept groups' indices [K].
    hint = ("§3.1 rejection sampling: keep group g iff its G rewards are not all equal (max != min); return the kept "
            "groups' indices")
    idx = lambda x: torch.as_tensor(x).tolist()  # noqa: E731
    # Group 1 (all correct) and group 2 (all wrong) go; 'any correct' would keep group 1.
    r = torch.tensor([1.0, 0, 1, 1, 0, 0, 0, 1])
    g.expect("4 groups of 2: mixed, all correct, all wrong, mixed", lambda M: idx(M.data_filter.rejection_sample(r, 2)), hint,
             wrong=[("the groups with any correct response", [0, 1, 3])])
    g.expect("with_counts", lambda M: M.data_filter.rejection_sample(r, 2, with_counts=True)[1],
             "counts of the groups: kept, all_correct (all equal and > 0), all_wrong (all equal and <= 0)")
    g.expect("non-binary rewards [0.5, 0.5, 0.2, 0.9]",
             lambda M: idx(M.data_filter.rejection_sample(torch.tensor([0.5, 0.5, 0.2, 0.9]), 2)),
             "all-equal means equal values, not 'all 0 or all 1': compare max and min")
    gen = torch.Generator().manual_seed(6)
    # 30% accuracy, groups of 4: about a quarter of the groups are all wrong.
    rr = (torch.rand(128, generator=gen) < 0.3).float()
    g.expect("32 random groups of 4", lambda M: idx(M.data_filter.rejection_sample(rr, 4)), hint)
    g.expect("an empty batch", lambda M: idx(M.data_filter.rejection_sample(torch.zeros(0), 4)), "no groups: no indices")


def _check_7(g: Grader):
    # Each case returns [sorted solved prompts, state_dict]: sums and counts, not only the verdict.
    def stats(M, recs, merge=()):
        # PromptStats: per prompt id, the sum of rewards ('correct') and the count ('seen').
        s = M.data_filter.PromptStats()
        for p, rs in recs:
            s.record(p, rs)
        if merge:
            o = M.data_filter.PromptStats()
            for p, rs in merge:
                o.record(p, rs)
            s.merge(o)
        return [sorted(s.solved()), s.state_dict()]

    hint = ("§3.1 online filtering: drop a prompt at the next stage only if it was correct EVERY time it was sampled in this "
            "stage: sum rewards and counts over all its records, solved iff correct == seen")
    # Prompt 10: 4 of 4 correct, solved; 11: 1 of 2; 12: 3 of 4, solved only in its first
    # step -- a student who overwrites instead of summing calls it solved.
    recs = [(10, [1, 1]), (11, [1, 0]), (10, [1, 1]), (12, [1, 1]), (12, [0, 1])]
    g.expect("prompt 12 solved in one step, not in the next", lambda M: stats(M, recs), hint,
             wrong=[("keeping only each prompt's last record",
                     [[10], {"correct": {10: 2.0, 11: 1.0, 12: 1.0}, "seen": {10: 2, 11: 2, 12: 2}}])])
    g.expect("nothing recorded", lambda M: stats(M, []), "no records: solved() is the empty set")
    rnd = random.Random(7)
    # 80% accuracy, 4 samples per record, ~5 records per prompt: none is right all 20 times
    # (0.8^20 = 1%), so this case grades the sums and counts of state_dict.
    rr = [(rnd.randrange(6), [float(rnd.random() < 0.8) for _ in range(4)]) for _ in range(30)]
    g.expect("30 random records of 6 prompts", lambda M: stats(M, rr), hint)
    g.expect("merge another rank's statistics", lambda M: stats(M, rr[:15], merge=rr[15:]),
             "merge adds the other object's sums and counts per prompt (train.py merges every rank's file)")


def _check_8(g: Grader):
    # By-hand values (the test's), per-problem k, then j = 1..k on random problems whose
    # accuracies spread over [0, 1].
    # correct: one list of 0/1 per problem, k samples each. pass@2 by hand:
    # (1 - C(2,2)/C(4,2)) = 5/6, 0 and 1 -> 0.611; the biased 1 - (1 - c/k)^2 gives 0.583.
    c = [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    hint = ("§8.1 unbiased pass@j (Chen et al. 2021): per problem 1 - C(k-c, j)/C(k, j) (0 when k - c < j), then "
            "the mean over problems")
    biased = sum(1 - (1 - sum(x) / 4) ** 2 for x in c) / 3
    g.expect("avg@k of three problems", lambda M: float(M.eval.avg_at_k(c)),
             "avg@k: each problem's share correct, averaged over problems")
    g.expect("avg@k with different k per problem", lambda M: float(M.eval.avg_at_k([[1, 0], [1, 1, 1, 0]])),
             "average each problem's own mean first (sum/len of its list), then over problems -- not over all samples at once",
             wrong=[("the mean over all samples pooled", 4 / 6)])
    g.expect("pass@2 of three problems with k = 4", lambda M: float(M.eval.pass_at_k(c, 2)), hint,
             wrong=[("the biased estimate 1 - (1 - c/k)^j", biased)])
    rnd = random.Random(8)
    # Accuracies p = U^2 lean towards hard problems, where the biased and unbiased
    # estimates differ most.
    many = [[float(rnd.random() < p) for _ in range(16)] for p in [rnd.random() ** 2 for _ in range(20)]]
    g.expect("pass@j for j = 1, 2, 4, 8, 16 on 20 random problems, k = 16",
             lambda M: [float(M.eval.pass_at_k(many, j)) for j in (1, 2, 4, 8, 16)], hint)
    g.expect("no problems", lambda M: [float(M.eval.avg_at_k([])), float(M.eval.pass_at_k([], 1))],
             "an empty list: 0.0, not a ZeroDivisionError")
    g.raises("pass@5 from 4 samples", lambda M: M.eval.pass_at_k(c, 5), ValueError,
             "j > k samples cannot estimate pass@j: raise ValueError naming pass@j")


def _check_9(g: Grader):
    # Lengths mixing short (1-50) and long (200-4000) sequences, as a step's responses do;
    # exact owner lists: every rank must compute the same plan.
    rnd = random.Random(9)
    # balance(lengths, n_ranks) -> owner rank per sequence, [len(lengths)] ints.
    hb = ("greedy by tokens: longest first (ties: lower index), each to the rank with the fewest tokens so far (ties: lower rank); "
          "deterministic, because every rank computes the same plan")
    L = [rnd.choice([rnd.randrange(1, 50), rnd.randrange(200, 4000)]) for _ in range(40)]
    g.expect("40 sequences of 1-4000 tokens over 4 ranks", lambda M: M.packing.balance(L, 4), hb,
             wrong=[("round-robin by position", [i % 4 for i in range(40)])])
    g.expect("ties: equal lengths over 3 ranks", lambda M: M.packing.balance([5] * 7, 3), hb)
    g.expect("more ranks than sequences", lambda M: M.packing.balance([3, 9], 4), hb)
    g.expect("no sequences", lambda M: [M.packing.balance([], 2), M.packing.plan([], 8)], "no sequences: []")
    # plan(lengths, budget) -> micro-batches, each a list of sequence indices whose tokens
    # fit the budget (the micro-batch's token count, eq. 3.1's N_tok summed over them).
    hp = ("first-fit decreasing: longest first (ties: lower index), into the first micro-batch with room for it, else a new one; "
          "a sequence longer than the budget gets a micro-batch of its own")
    g.expect("plan 40 sequences into micro-batches of 4096 tokens", lambda M: M.packing.plan(L, 4096), hp)
    g.expect("plan with sequences longer than the budget", lambda M: M.packing.plan([10, 3, 12, 2, 9], 8), hp)


def _check_10(g: Grader):
    # float64, V = 29, N = 13 positions (not a multiple of the chunk): the gradients of a
    # random combination of both outputs, against the reference's (equal to autograd
    # through full logits to 1e-12, tests/test_loss.py).
    gen = torch.Generator().manual_seed(10)
    # hidden h [N, H], lm_head weight W [V, H], targets y [N]; g_lp and g_ent [N] are the
    # upstream gradients of the two outputs, random so that no term can cancel.
    N, H, V = 13, 8, 29
    h0, w0 = torch.randn(N, H, generator=gen, dtype=torch.float64), torch.randn(V, H, generator=gen, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=gen)
    g_lp, g_ent = torch.randn(N, generator=gen, dtype=torch.float64), torch.randn(N, generator=gen, dtype=torch.float64)

    def grads(M, tau=1.0, chunk=4, use=("lp", "ent"), with_entropy=True, need_h=True):
        h, w = h0.clone().requires_grad_(need_h), w0.clone().requires_grad_()
        lp, ent = M.loss.head_logprobs(h, w, y, tau, chunk=chunk, with_entropy=with_entropy)
        # L = sum g_lp * log p(y) + sum g_ent * H: backward receives exactly g_lp and g_ent.
        total = (lp * g_lp).sum() * ("lp" in use) + (ent * g_ent).sum() * ("ent" in use)
        total.backward()
        return [h.grad, w.grad]

    hint = ("per position: d log p/dz = onehot(y) - p and dH/dz = -p (log p + H); dL/dz = g_lp (onehot - p) + g_ent dH/dz, "
            "then dL/dlogits = dL/dz / tau, dL/dh = (dL/dlogits) W and dL/dW = (dL/dlogits)^T h, chunk by chunk (loss.py)")
    g.expect("log-prob and entropy gradients, tau 1, chunks of 4", grads, hint, tol=1e-9)
    g.expect("tau 0.7", lambda M: grads(M, 0.7),
             "z = (h W^T) / tau, so every dL/dz is divided by tau once more for dL/dh and dL/dW", tol=1e-9)
    g.expect("only the log-probs carry gradient", lambda M: grads(M, 0.8, use=("lp",)),
             "with g_ent = 0 only g_lp * (onehot(y) - p) remains", tol=1e-9)
    g.expect("only the entropies carry gradient", lambda M: grads(M, 1.0, use=("ent",)),
             "dH/dz = -p * (log p + H): a zero g_lp must not drop the entropy term", tol=1e-9)
    g.expect("with_entropy=False", lambda M: grads(M, 0.6, chunk=100, with_entropy=False),
             "without the entropy, dL/dz = g_lp (onehot(y) - p)", tol=1e-9)
    g.expect("no gradient for hidden (a frozen input)", lambda M: grads(M, 1.0, chunk=5, need_h=False),
             "return None for an input whose ctx.needs_input_grad is False", tol=1e-9)


CHECKS = {1: _check_1, 2: _check_2, 3: _check_3, 4: _check_4, 5: _check_5, 6: _check_6, 7: _check_7, 8: _check_8,
          9: _check_9, 10: _check_10}
