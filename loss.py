"""The MAGIC objective: group advantages (eq. 2.5) and the token-level policy loss (eq. 3.1).

Skywork-OR1 report §2 and §3.1. This file is torch only and can be copied on its own.

Group-relative advantage, eq. 2.5. For a prompt with G sampled responses and binary
rewards r_1..r_G, every token of response i gets

    A_i = (r_i - mean(r)) / (std(r) + eps)

The released code (an early verl fork) uses the *unbiased* std (divide by G-1) and
eps = 1e-6; a group of one gets mean 0 and std 1. We follow it.

MAGIC policy loss, eq. 3.1, for one SGD step whose responses hold N_tok tokens in all
(every micro-batch, every rank):

    L = -(1/N_tok) * sum_{i,j,t} [ min(rho * A, clip(rho, 1-eps_low, 1+eps_high) * A)
                                   + alpha * H_t ]

rho is pi_theta / pi_old of the sampled token, H_t the full-vocabulary entropy. Two
things differ from GRPO's eq. 2.4: no per-response 1/|y| (token-level mean, which
removes GRPO's length bias) and no KL term (§3.2.6). Both GRPO choices are kept as
ablations: agg="seq-mean-token-mean" and kl_coef > 0 (the k3 estimator).

Imports: torch only. Exports:
    group_advantages(rewards, group_size, eps, truncated, mask_mode) -> [N] advantages
    policy_loss(logprobs, old_logprobs, advantages, mask, ...) -> (loss, metrics)
    token_logprobs(logits, tokens, temperature) -> [B, T] log pi(token)
    entropy_from_logits(logits, temperature) -> [B, T] full-vocabulary entropy
    head_logprobs(hidden, weight, targets, temperature, chunk) -> (log pi, entropy), chunked,
        never holding a [positions, V] tensor (the trainer's path; the two above are the
        full-logit reference it is tested against)
    ScoredHead(lm_head) -> an lm_head replacement that runs head_logprobs inside the model
"""

from __future__ import annotations

import torch

# --------------------------------------------------------------------------------------
# Advantages (eq. 2.5) and the truncation-mask ablations (§3.2.3)
# --------------------------------------------------------------------------------------


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    eps: float = 1e-6,
    truncated: torch.Tensor | None = None,
    mask_mode: str = "none",
) -> torch.Tensor:
    """Group-normalised advantages, eq. 2.5, for group-contiguous rewards.

    rewards:    [N] with N = prompts * group_size; rows g*G .. g*G+G-1 are one group.
    truncated:  [N] bool, True where the response hit the length limit (needed by masks).
    mask_mode:  "none"   -- MAGIC default: truncated responses keep their reward 0 and a
                            normal (negative) advantage (§3.2.3, No-Adv-Mask).
                "before" -- Adv-Mask-Before: truncated responses are left out of the
                            group mean/std and get advantage 0.
                "after"  -- Adv-Mask-After: statistics over the whole group, then the
                            truncated responses' advantages are set to 0.

    Worked example (one group of 4, unbiased std of [1,0,0,0] is 0.5):

    >>> group_advantages(torch.tensor([1., 0., 0., 0.]), 4)
    tensor([ 1.5000, -0.5000, -0.5000, -0.5000])
    >>> group_advantages(torch.tensor([1., 1., 0., 0.]), 4, truncated=torch.tensor([0, 0, 0, 1]).bool(), mask_mode="after")
    tensor([ 0.8660,  0.8660, -0.8660,  0.0000])
    """
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be [N] with N a multiple of group_size={group_size}, got {tuple(rewards.shape)}")
    if mask_mode not in ("none", "before", "after"):
        raise ValueError(f"mask_mode must be 'none', 'before' or 'after', got {mask_mode!r}")
    if mask_mode != "none" and truncated is None:
        raise ValueError(f"mask_mode={mask_mode!r} needs the `truncated` mask")
    r = rewards.double().view(-1, group_size)  # [P, G]
    # `keep` marks which responses enter the group statistics.
    keep = torch.ones_like(r, dtype=torch.bool)
    if mask_mode == "before":
        keep = ~truncated.view(-1, group_size).bool()
    n = keep.sum(dim=1, keepdim=True).double()  # [P, 1] responses per group that count
    mean = (r * keep).sum(dim=1, keepdim=True) / n.clamp(min=1)
    # Unbiased variance (n-1), as in the released code; a group of one: std := 1.
    var = (((r - mean) ** 2) * keep).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
    # A group with a single counted response: mean 0 and std 1, as the released code does.
    std = torch.where(n > 1, var.sqrt(), torch.ones_like(var))
    mean = torch.where(n > 1, mean, torch.zeros_like(mean))
    adv = (r - mean) / (std + eps)  # [P, G]
    if mask_mode != "none":
        adv = adv.masked_fill(truncated.view(-1, group_size).bool(), 0.0)
    return adv.view(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------------------
# Per-token log-probabilities and entropy from logits (temperature-scaled)
# --------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax arithmetic in float32 at least (bf16 logits are upcast); float64 inputs
    stay float64, so the gradient tests can compare paths to 1e-12."""
    return torch.promote_types(dtype, torch.float32)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(token) for each position: logits [B, T, V], tokens [B, T] -> [B, T] float32.

    Logits are divided by the sampling temperature first, so the policy being trained is
    the one that generated the samples (magic-recipe.md, "Logits are divided ...").
    logsumexp is taken in float32 row by row of the batch so a bf16 [B, T, V] input never
    gets a full float32 copy.

    >>> token_logprobs(torch.zeros(1, 1, 4), torch.tensor([[2]])).exp()
    tensor([[0.2500]])
    """
    acc = _acc_dtype(logits.dtype)
    out = torch.empty(tokens.shape, dtype=acc, device=logits.device)
    for b in range(logits.shape[0]):  # one sequence at a time bounds the fp32 copy to [T, V]
        lg = logits[b].to(acc) / temperature  # [T, V]
        picked = lg.gather(-1, tokens[b].unsqueeze(-1)).squeeze(-1)  # [T]
        out[b] = picked - torch.logsumexp(lg, dim=-1)
    return out


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Full-vocabulary entropy H = logsumexp(z) - sum softmax(z) * z, z = logits / tau.

    logits [..., V] -> [...] float32. Rows are processed in chunks of about `chunk_elems`
    float32 elements (64 MiB), so the extra memory stays O(chunk) instead of a second
    full [B, T, V] float32 copy (V = 152,064 for Qwen2: 110 positions per chunk).
    Differentiable: the entropy bonus of eq. 3.1 uses it.

    >>> entropy_from_logits(torch.zeros(2, 4))  # uniform over 4 tokens: log 4
    tensor([1.3863, 1.3863])
    """
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # [B*T, V]
    rows = max(1, chunk_elems // V)
    pieces = []
    for start in range(0, flat.shape[0], rows):
        z = flat[start : start + rows].to(_acc_dtype(logits.dtype)) / temperature  # [c, V]
        logz = torch.logsumexp(z, dim=-1)  # [c]
        p = torch.softmax(z, dim=-1)  # [c, V]
        # sum_v p_v z_v as a batched dot product: no third [c, V] temporary.
        pz = torch.bmm(p.unsqueeze(1), z.unsqueeze(2)).view(-1)  # [c]
        pieces.append(logz - pz)
    if not pieces:
        return flat.new_zeros(logits.shape[:-1], dtype=_acc_dtype(logits.dtype))
    return torch.cat(pieces).view(logits.shape[:-1])


# --------------------------------------------------------------------------------------
# The loss head without a [positions, V] tensor: chunked, recomputed in backward
# --------------------------------------------------------------------------------------
#
# Eq. 3.1 needs two numbers per scored position t: log pi(y_t) of the sampled token and
# the full-vocabulary entropy H_t. Both come from the logits z_t = W h_t / tau, a row of
# V numbers (V = 152,064 for Qwen2). Materialising them for a 32K-token response costs
# 32K x 152K x (2 bytes bf16 + the float32 copies autograd saves) -- tens of GB. But
# each position only needs its own row, and the gradient of both outputs with respect to
# that row has a closed form:
#
#     log p_t   = z_t[y_t] - logsumexp(z_t)       d log p_t / dz = onehot(y_t) - p
#     H_t       = logsumexp(z_t) - sum_v p_v z_v  d H_t / dz     = -p * (log p + H_t)
#
# So the forward pass walks over chunks of positions, computes each chunk's logits,
# keeps only log p_t, H_t and logsumexp(z_t) (three floats per position) and throws the
# logits away; the backward pass recomputes each chunk's logits once, forms dL/dz with
# the formulas above, and multiplies back into dL/dh (for the decoder) and dL/dW (the
# lm_head / tied embedding). Peak extra memory is one chunk: ~8 bytes x chunk x V (two
# float32 [chunk, V] buffers; the bf16 logits and their gradient are shorter-lived), and
# in backward the float32 sum of the weight's gradient and one chunk's part of it.


class _ChunkedHead(torch.autograd.Function):
    """hidden [N, H], weight [V, H], targets [N] -> (log pi(target) [N], entropy [N]) in
    float32, `chunk` positions at a time. Saves only hidden, weight, targets and two
    floats per position; see the comment block above for the gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, chunk: int, with_entropy: bool):
        N = hidden.shape[0]
        acc = _acc_dtype(hidden.dtype)  # float32 (float64 in the tests)
        logp = torch.empty(N, dtype=acc, device=hidden.device)
        ent = torch.zeros(N, dtype=acc, device=hidden.device)
        lse = torch.empty(N, dtype=acc, device=hidden.device)
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            # The matmul in the compute dtype (as nn.Linear would), then float32: the same
            # numbers as the full-logit path's `logits.float() / tau`.
            z = (hidden[s:e] @ weight.T).to(acc)  # [c, V]
            if temperature != 1.0:
                z.div_(temperature)
            picked = z.gather(-1, targets[s:e, None]).squeeze(-1)  # [c] z[y_t]
            m = z.max(-1, keepdim=True).values  # [c, 1] for a stable exp
            z.sub_(m)  # z - max, in place
            ex = z.exp()  # [c, V], the only second [c, V] buffer
            tot = ex.sum(-1)  # [c]
            lse[s:e] = m.squeeze(-1) + tot.log()
            logp[s:e] = picked - lse[s:e]
            if with_entropy:  # H = log(sum e) - sum(e * (z - max)) / sum(e)
                ent[s:e] = tot.log() - torch.bmm(ex.unsqueeze(1), z.unsqueeze(2)).view(-1) / tot
            del z, ex  # before the next chunk's logits exist: one chunk's buffers at a time
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.temperature, ctx.chunk, ctx.with_entropy = temperature, chunk, with_entropy
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        T, chunk = ctx.temperature, ctx.chunk
        use_ent = ctx.with_entropy and g_ent is not None and bool(g_ent.ne(0).any())
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.to(lse.dtype)
        g_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # The weight's gradient sums over every chunk: each chunk's [V, H] product in the
        # compute dtype (a bf16 matmul, fp32 inside), added into a float32 sum (2.2 GB for
        # the 7B's lm_head) that is rounded to the weight's dtype once at the end. A bf16
        # running sum would be rounded once per chunk: 32 times for a 32K response.
        g_weight = torch.zeros_like(weight, dtype=lse.dtype) if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], chunk):
            e = min(s + chunk, hidden.shape[0])
            z = (hidden[s:e] @ weight.T).to(lse.dtype)  # recompute this chunk's logits [c, V]
            if T != 1.0:
                z.div_(T)
            z.sub_(lse[s:e, None])  # log p, in place
            p = z.exp()  # softmax [c, V]
            gl = g_logp[s:e, None]
            if use_ent:  # dL/dz = -p * (g_logp + g_ent * (log p + H)), built in the log-p buffer
                z.add_(ent[s:e, None]).mul_(g_ent[s:e, None].to(lse.dtype)).add_(gl).mul_(p).neg_()
                del p
            else:  # dL/dz = -p * g_logp: reuse the softmax buffer
                z = p.mul_(gl).neg_()
            z.scatter_add_(-1, targets[s:e, None], gl)  # + g_logp * onehot(y_t)
            if T != 1.0:
                z.div_(T)  # dL/dlogits = dL/dz / tau, in place
            g_z = z.to(hidden.dtype)  # [c, V] in the compute dtype, for the two matmuls
            del z
            if g_hidden is not None:
                torch.mm(g_z, weight, out=g_hidden[s:e])  # [c, H]
            if g_weight is not None:
                g_weight.add_(g_z.T @ hidden[s:e])  # [V, H]: this chunk's part, into the float32 sum
            del g_z  # before the next chunk's logits exist
        return g_hidden, g_weight.to(weight.dtype) if g_weight is not None else None, None, None, None, None


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                  chunk: int = 1024, with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(target) and full-vocabulary entropy from final hidden states, chunked.

    hidden:  [N, H] final (normed) hidden states of the scored positions only.
    weight:  [V, H] the lm_head weight (the tied embedding, for tied models).
    targets: [N] the sampled token at each position.
    chunk:   positions per chunk; the only [chunk, V] buffers live inside one chunk.
    Returns two float32 [N] tensors (entropy is zeros with with_entropy=False).
    Same values and gradients as token_logprobs / entropy_from_logits of the full
    logits `hidden @ weight.T` (tests/test_loss.py, float64):

    >>> h, w = torch.zeros(2, 3), torch.zeros(4, 3)  # all logits 0: uniform over 4
    >>> lp, ent = head_logprobs(h, w, torch.tensor([0, 3]))
    >>> lp.exp(), ent
    (tensor([0.2500, 0.2500]), tensor([1.3863, 1.3863]))
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden [N, H] and weight [V, H] expected, got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    return _ChunkedHead.apply(hidden, weight, targets, float(temperature), max(1, int(chunk)), bool(with_entropy))


class ScoredHead(torch.nn.Module):
    """Stands in for a causal LM's `lm_head` (same weight Parameter, so tying, sharding
    and state-dict names are unchanged) and returns, instead of logits, the pair
    (log pi(target), entropy) per kept position: a [1, n, 2] "logits" tensor.

    Why replace the head rather than call `head_logprobs` after the model: under FSDP2
    the root's parameters (embeddings, final norm, lm_head) are gathered for the root
    module's forward and their gradients reduce-scattered after its backward, so the head
    must run inside `model(...)`. transformers' `logits_to_keep` (a tensor of positions)
    hands the head only the scored positions' hidden states. Set `targets` (and
    temperature, chunk, with_entropy) right before each call; see train.score().
    """

    def __init__(self, lm_head: torch.nn.Linear, chunk: int = 1024):
        super().__init__()
        if getattr(lm_head, "bias", None) is not None:
            raise ValueError("ScoredHead supports bias-free lm_heads (Llama, Qwen2)")
        self.weight = lm_head.weight  # the same Parameter object: ties and names survive
        self.chunk = chunk
        self.targets: torch.Tensor | None = None  # [n] sampled tokens of the scored positions
        self.temperature = 1.0
        self.with_entropy = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [1, n, H] -> [1, n, 2]
        if self.targets is None or self.targets.numel() != hidden.shape[-2]:
            raise RuntimeError("ScoredHead: set .targets to the n sampled tokens before calling the model")
        lp, ent = head_logprobs(hidden.reshape(-1, hidden.shape[-1]), self.weight, self.targets, self.temperature,
                                self.chunk, self.with_entropy)
        # A fresh [1, n, 2] tensor, not a view: it is the FSDP2 root's output, whose backward
        # hooks an in-place op on a view would bypass (FSDP2 warns about views).
        return torch.stack([lp[None], ent[None]], dim=-1)


# --------------------------------------------------------------------------------------
# The policy loss, eq. 3.1 (and GRPO's eq. 2.4 as an ablation)
# --------------------------------------------------------------------------------------


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    agg: str = "token-mean",
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip policy loss with entropy bonus, eq. 3.1. All tensors are [B, T].

    logprobs:      log pi_theta(y_t) under the current parameters (requires grad).
    old_logprobs:  log pi_old(y_t), recomputed by the trainer before the update.
    advantages:    [B] per response or [B, T] per token.
    mask:          1 on response tokens that count, 0 on padding.
    clip_low/high: eps_low / eps_high; clip_high > clip_low is clip-higher (§4.5).
    entropy:       [B, T] full-vocabulary entropy H_t (with grad) for the bonus.
    entropy_coef:  alpha_k, from entropy_control.AdaptiveEntropyController.coef.
    ref_logprobs:  log pi_ref(y_t), only for the k3-KL ablation (§3.2.6).
    agg:           "token-mean" (eq. 3.1) or "seq-mean-token-mean" (GRPO, eq. 2.4).
    num_tokens:    the divisor of "token-mean": the token count of the WHOLE SGD step
                   (all micro-batches, all ranks). Summing this micro-batch loss over
                   micro-batches and ranks then gives exactly the one-big-batch loss, and
                   so the one-big-batch gradient. Default: this micro-batch's count.
                   For "seq-mean-token-mean" it is the number of sequences of the step.

    On policy (old == current) the ratio is 1, nothing is clipped, and the loss is
    -mean(A) over tokens:

    >>> lp = torch.zeros(1, 3)
    >>> loss, m = policy_loss(lp, lp, torch.tensor([2.0]), torch.ones(1, 3))
    >>> round(loss.item(), 4), m["clip_frac_low"], m["clip_frac_high"]
    (-2.0, 0.0, 0.0)
    """
    if agg not in ("token-mean", "seq-mean-token-mean"):
        raise ValueError(f"agg must be 'token-mean' or 'seq-mean-token-mean', got {agg!r}")
    mask = mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logprobs)  # [B] -> [B, T]
    advantages = advantages.to(logprobs.dtype)

    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)  # rho, [B, T]
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    # The per-token objective to MAXIMISE: min(rho*A, clip(rho)*A) + alpha*H - beta*KL.
    objective = torch.minimum(unclipped, clipped)
    if entropy is not None and entropy_coef != 0.0:
        objective = objective + entropy_coef * entropy
    kl = None
    if ref_logprobs is not None and kl_coef != 0.0:
        # k3 estimator of KL(pi || pi_ref): e^(ref-lp) - (ref-lp) - 1 >= 0, clamped to
        # [-10, 10] per token as the released code does (core_algos.kl_penalty,
        # "low_var_kl"): one token whose probability collapsed cannot dominate the loss.
        d = ref_logprobs - logprobs
        kl = torch.clamp(torch.exp(d) - d - 1.0, min=-10.0, max=10.0)
        objective = objective - kl_coef * kl

    if agg == "token-mean":
        denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=logprobs.dtype)
        loss = -(objective * mask).sum() / denom.clamp(min=1)
    else:  # GRPO eq. 2.4: mean over tokens of each response, then mean over responses
        per_seq = (objective * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [B]
        denom = logprobs.shape[0] if num_tokens is None else num_tokens
        loss = -per_seq.sum() / max(float(denom), 1.0)

    # Metrics over this micro-batch's real tokens (detached floats for logging).
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        low = ((ratio < 1.0 - clip_low) & (advantages < 0)).to(mask.dtype)  # clipped from below
        high = ((ratio > 1.0 + clip_high) & (advantages > 0)).to(mask.dtype)  # clipped from above
        metrics = {
            "clip_frac_low": ((low * mask).sum() / n).item(),
            "clip_frac_high": ((high * mask).sum() / n).item(),
            # k1 estimate of KL(pi_old || pi_theta) on sampled tokens: mean(old - new).
            "approx_kl": ((-log_ratio * mask).sum() / n).item(),
            "ratio_mean": ((ratio * mask).sum() / n).item(),
            "tokens": mask.sum().item(),
        }
        if entropy is not None:
            metrics["entropy"] = ((entropy * mask).sum() / n).item()
        if kl is not None:
            metrics["kl_ref"] = ((kl * mask).sum() / n).item()
    return loss, metrics
