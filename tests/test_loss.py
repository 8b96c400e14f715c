"""loss.py: eq. 2.5 advantages, eq. 3.1 loss, entropy, and the documented examples."""

import doctest
import math

import pytest
import torch

import data
import data_filter
import packing
import rollout
import entropy_control
import eval as eval_mod
import loss
from loss import entropy_from_logits, group_advantages, policy_loss, token_logprobs


@pytest.mark.parametrize("mod", [loss, entropy_control, data, data_filter, eval_mod, packing, rollout])
def test_docstring_examples(mod):
    res = doctest.testmod(mod, verbose=False)
    assert res.attempted > 0 and res.failed == 0


def test_advantages_by_hand():
    # group 1: [1,0,0,0] mean .25, unbiased std .5; group 2 all equal -> 0
    a = group_advantages(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1]), 4)
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0]), atol=1e-5, rtol=0)
    # a group of one: mean 0, std 1 (released code)
    torch.testing.assert_close(group_advantages(torch.tensor([1.0, 0.0]), 1), torch.tensor([1.0, 0.0]), atol=1e-5, rtol=0)


def test_advantage_masks():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    tr = torch.tensor([False, False, True, True])
    before = group_advantages(r, 4, truncated=tr, mask_mode="before")
    # stats over [1, 0] only: mean .5, unbiased std .7071
    torch.testing.assert_close(before, torch.tensor([0.70711, -0.70711, 0.0, 0.0]), atol=1e-4, rtol=0)
    after = group_advantages(r, 4, truncated=tr, mask_mode="after")
    torch.testing.assert_close(after, torch.tensor([1.5, -0.5, 0.0, 0.0]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="truncated"):
        group_advantages(r, 4, mask_mode="before")


def test_on_policy_ratio_one_no_clipping():
    lp = torch.randn(3, 5)
    _, m = policy_loss(lp, lp.clone(), torch.tensor([1.0, -1.0, 0.5]), torch.ones(3, 5))
    assert m["ratio_mean"] == pytest.approx(1.0)
    assert m["clip_frac_low"] == 0.0 and m["clip_frac_high"] == 0.0


def test_clip_counts_asymmetric_bounds_both_signs():
    old = torch.zeros(1, 4)
    # ratios: 0.7, 0.9, 1.25, 1.35 ; clip_low=.2 -> below .8 ; clip_high=.3 -> above 1.3
    new = torch.log(torch.tensor([[0.7, 0.9, 1.25, 1.35]]))
    mask = torch.ones(1, 4)
    _, pos = policy_loss(new, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.3)
    assert pos["clip_frac_high"] == pytest.approx(0.25) and pos["clip_frac_low"] == 0.0  # only 1.35 binds for A>0
    _, neg = policy_loss(new, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.3)
    assert neg["clip_frac_low"] == pytest.approx(0.25) and neg["clip_frac_high"] == 0.0  # only 0.7 binds for A<0


def test_token_mean_gradient_micro_batches_equal_one_batch():
    torch.manual_seed(0)
    B, T = 6, 7
    logits = torch.randn(B, T, 11, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 11, (B, T))
    mask = (torch.rand(B, T) > 0.3).double()
    old = token_logprobs(logits.detach(), tokens) + 0.1 * torch.randn(B, T, dtype=torch.float64)
    adv = torch.randn(B, dtype=torch.float64)

    def run(parts):
        if logits.grad is not None:
            logits.grad = None
        n = mask.sum()
        for idx in parts:
            lp = token_logprobs(logits[idx], tokens[idx]).double()
            ent = entropy_from_logits(logits[idx]).double()
            l, _ = policy_loss(lp, old[idx], adv[idx], mask[idx], entropy=ent, entropy_coef=0.01, num_tokens=n)
            l.backward()
        return logits.grad.clone()

    one = run([list(range(B))])
    micro = run([[0, 1], [2], [3, 4, 5]])
    torch.testing.assert_close(one, micro, atol=1e-9, rtol=0)


def test_seq_mean_differs_from_token_mean():
    lp = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    tok, _ = policy_loss(lp, lp, adv, mask)  # -(1 - 4)/5 = 0.6
    seq, _ = policy_loss(lp, lp, adv, mask, agg="seq-mean-token-mean")  # -(1 - 1)/2 = 0
    assert tok.item() == pytest.approx(0.6) and seq.item() == pytest.approx(0.0)


def test_k3_kl_is_zero_at_reference_and_positive_elsewhere():
    lp = torch.randn(2, 3)
    _, m0 = policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), ref_logprobs=lp, kl_coef=0.1)
    _, m1 = policy_loss(lp, lp, torch.zeros(2), torch.ones(2, 3), ref_logprobs=lp + 0.5, kl_coef=0.1)
    assert m0["kl_ref"] == pytest.approx(0.0, abs=1e-7) and m1["kl_ref"] > 0


def test_entropy_matches_categorical_and_temperature():
    logits = torch.randn(3, 5, 97) * 4
    ref = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits, chunk_elems=4 * 97), ref, atol=1e-5, rtol=1e-5)
    ref_t = torch.distributions.Categorical(logits=logits / 0.6).entropy()
    torch.testing.assert_close(entropy_from_logits(logits, temperature=0.6), ref_t, atol=1e-5, rtol=1e-5)


def test_token_logprobs_match_log_softmax():
    logits = torch.randn(2, 4, 13).bfloat16()
    tokens = torch.randint(0, 13, (2, 4))
    ref = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens, 0.7), ref)


def test_token_mean_gradient_two_gloo_ranks_fsdp2_equals_one_batch(tmp_path):
    import json

    from conftest import torchrun

    torchrun(["tests/dist_grad_check.py", str(tmp_path)])
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text())["max_abs_diff"] < 1e-9


def test_entropy_bonus_raises_entropy():
    """With zero advantages only the bonus (eq. 3.1's alpha * H) moves the logits: one
    gradient step on the loss must increase the entropy."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    tokens = torch.randint(0, 11, (2, 5))
    lp = token_logprobs(logits, tokens)
    ent = entropy_from_logits(logits)
    loss, _ = policy_loss(lp, lp.detach(), torch.zeros(2), torch.ones(2, 5), entropy=ent, entropy_coef=0.1)
    loss.backward()
    with torch.no_grad():
        after = entropy_from_logits(logits - 1.0 * logits.grad).mean()
    assert after > ent.mean()


def test_k3_kl_is_clamped_like_the_released_code():
    """Released core_algos.kl_penalty("low_var_kl") clamps the per-token k3 to [-10, 10]."""
    lp = torch.zeros(1, 2)
    ref = torch.tensor([[30.0, 0.5]])  # e^30 - 31: far beyond the clamp; e^.5 - 1.5 inside it
    _, m = policy_loss(lp, lp, torch.zeros(1), torch.ones(1, 2), ref_logprobs=ref, kl_coef=0.1)
    assert m["kl_ref"] == pytest.approx((10.0 + (math.exp(0.5) - 1.5)) / 2)


@pytest.mark.parametrize("temperature,with_entropy,chunk", [(1.0, True, 3), (0.7, True, 5), (0.6, False, 100)])
def test_chunked_head_equals_full_logits_values_and_gradients(temperature, with_entropy, chunk):
    """loss.head_logprobs (chunked, recomputed in backward, no [N, V] tensor kept) gives
    the full-logit path's log-probs, entropies and gradients, in float64."""
    from loss import head_logprobs

    torch.manual_seed(0)
    N, H, V = 13, 8, 29
    h = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, V, (N,))
    g_lp, g_ent = torch.randn(N, dtype=torch.float64), torch.randn(N, dtype=torch.float64)

    def grads(lp, ent):
        (lp * g_lp + (ent * g_ent if with_entropy else 0)).sum().backward()
        out = h.grad.clone(), W.grad.clone()
        h.grad = W.grad = None
        return out

    lp, ent = head_logprobs(h, W, t, temperature, chunk=chunk, with_entropy=with_entropy)
    got = grads(lp, ent)
    logits = h @ W.T  # [N, V]: the reference materialises it
    lp_ref = token_logprobs(logits[None], t[None], temperature)[0]
    ent_ref = entropy_from_logits(logits, temperature)
    want = grads(lp_ref, ent_ref)
    torch.testing.assert_close(lp, lp_ref, atol=1e-12, rtol=0)
    if with_entropy:
        torch.testing.assert_close(ent, ent_ref, atol=1e-12, rtol=0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("tie,placement", [("tied", "balanced"), ("untied", "balanced"), ("tied", "uneven")])
def test_packed_chunked_update_equals_padded_full_logits_two_gloo_ranks(tie, placement, tmp_path):
    """train.py's update (sequences balanced over 2 ranks, packed micro-batches, the chunked
    head as the FSDP2 root's lm_head) == the padded full-logit path of one process, in
    float64, for tied and untied embeddings (tests/dist_pack_check.py): loss, old
    log-probs and gradients. `uneven`: one rank has one micro-batch, the other several,
    so the first runs zero-weight dummies, which must change nothing."""
    import json

    from conftest import torchrun

    torchrun(["tests/dist_pack_check.py", str(tmp_path), tie, placement])
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sum(r["received"] for r in res) == 7 and all(r["received"] > 0 for r in res)
    assert res[0]["passes"] == res[1]["passes"]  # FSDP2: the same number of passes on every rank
    if placement == "uneven":
        assert res[0]["real_micro_batches"] == 1 < res[1]["real_micro_batches"] == res[1]["passes"]
    for r in res:
        assert r["tokens"] == r["n_tok"]  # every response token scored exactly once over the ranks
        assert r["old_logprob_max_abs_diff"] < 1e-12 and r["grad_max_abs_diff"] < 1e-12, r
        assert r["loss_abs_diff"] < 1e-12, r


def test_packed_attention_takes_its_boundaries_as_ints(tiny_model, monkeypatch):
    """packed_sdpa gets each sequence's boundaries from pack() as plain ints (through
    policy.score's keyword arguments): reading them from position_ids copies a GPU tensor
    to the host in every layer (and again under checkpointing). Same result either way;
    and score() never takes the position_ids route (it is made to fail here)."""
    import torch
    from transformers import AutoModelForCausalLM

    import packing
    import policy
    from loss import ScoredHead

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 9, 8), torch.randn(1, 1, 9, 8), torch.randn(1, 1, 9, 8)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 0, 1, 2]])
    by_pos, _ = packing.packed_sdpa(None, q, k, v, None, position_ids=pos)
    by_cuts, _ = packing.packed_sdpa(None, q, k, v, None, position_ids=None, packed_cuts=[0, 4, 6, 9])
    assert torch.equal(by_pos, by_cuts)

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32,
                                                 attn_implementation=packing.register_packed_attention())
    model.lm_head = ScoredHead(model.lm_head, 4)
    mb = packing.pack([([5, 6, 7, 8, 9], 2), ([10, 11, 12], 1)], "cpu")
    want, _ = policy.score(model, mb, 1.0)
    monkeypatch.setattr(packing, "_boundaries", lambda *a: (_ for _ in ()).throw(AssertionError("read from the device")))
    got, _ = policy.score(model, mb, 1.0)
    assert torch.equal(want, got) and got.shape == (5,)
