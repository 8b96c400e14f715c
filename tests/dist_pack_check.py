"""Run under torchrun (2 gloo ranks): the trainer's update path -- sequences balanced over
ranks by tokens (packing.exchange), packed micro-batches, the chunked loss head inside the
FSDP2 root -- gives the same loss and gradients as the padded, full-logit path of one
process, in float64. Usage: dist_pack_check.py OUT {tied,untied} [balanced|uneven]

Reference (every rank, unsharded copy): the sequences right-padded into one [B, L]
batch with an attention mask, transformers' own lm_head -> [B, L, V] logits, then
loss.token_logprobs / entropy_from_logits / policy_loss divided by the global token count.
Distributed: rank 0 holds every sequence, packing.balance + exchange spread them over
the 2 ranks, policy.old_logprobs and policy.accumulate_gradients run with a 24-token
micro-batch budget (several micro-batches; the longest sequence, 29 tokens, runs alone
and the head walks it in chunks of 4 positions), temperature 0.7. `uneven` sends rank 0
only the longest sequence (one micro-batch) and rank 1 the other six (several): rank 0
then runs zero-weight dummy micro-batches to keep FSDP2's collectives in step. Writes
the max absolute differences (old log-probs, loss, gradients) to OUT/rank<r>.json.
"""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dist_exit import run_then_exit, write_result  # noqa: E402  (tests/dist_exit.py)
import packing  # noqa: E402
import policy  # noqa: E402
from recipes import Config  # noqa: E402
from loss import ScoredHead, entropy_from_logits, policy_loss, token_logprobs  # noqa: E402


def main(out: str, tie: str, placement: str = "balanced") -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # the same model and data on every rank
    V = 61
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, tie_word_embeddings=tie == "tied")
    ref = LlamaForCausalLM(cfg).double()
    lens = [(3, 5), (8, 1), (4, 12), (5, 24), (2, 3), (6, 9), (7, 2)]  # (prompt, response) lengths
    seqs = [(torch.randint(0, V, (p + r,)).tolist(), p) for p, r in lens]
    adv = torch.randn(len(seqs), dtype=torch.float64).tolist()
    T, coef, n_tok = 0.7, 0.01, sum(r for _, r in lens)

    # (a) one process, padded, full logits.
    B, L = len(seqs), max(len(t) for t, _ in seqs)
    ids = torch.zeros(B, L, dtype=torch.long)
    att = torch.zeros(B, L, dtype=torch.long)
    for i, (t, _) in enumerate(seqs):
        ids[i, : len(t)], att[i, : len(t)] = torch.tensor(t), 1
    R = max(r for _, r in lens)
    logits = ref(input_ids=ids, attention_mask=att, use_cache=False).logits  # [B, L, V]
    rows = torch.stack([torch.nn.functional.pad(logits[i, p - 1: p - 1 + r], (0, 0, 0, R - r)) for i, (p, r) in enumerate(lens)])
    targets = torch.stack([torch.nn.functional.pad(torch.tensor(seqs[i][0][p: p + r]), (0, R - r)) for i, (p, r) in enumerate(lens)])
    mask = (torch.arange(R) < torch.tensor([r for _, r in lens])[:, None]).double()  # [B, R]
    lp_ref = token_logprobs(rows, targets, T)  # [B, R] float64
    old = (lp_ref.detach() + 0.3 * torch.randn(B, R, dtype=torch.float64)) * mask  # off-policy: the clip binds
    loss_ref, _ = policy_loss(lp_ref, old, torch.tensor(adv, dtype=torch.float64), mask, clip_low=0.2, clip_high=0.28,
                              entropy=entropy_from_logits(rows, T), entropy_coef=coef, num_tokens=n_tok)
    loss_ref.backward()

    # (b) the trainer's path on 2 ranks.
    model = copy.deepcopy(ref)
    model.zero_grad(set_to_none=True)
    model.config._attn_implementation = packing.register_packed_attention()
    model.lm_head = ScoredHead(model.lm_head, chunk=4)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    old_rows = [old[i, :r].clone() for i, (_, r) in enumerate(lens)]
    items = [(t, [p, adv[i], i]) for i, (t, p) in enumerate(seqs)] if rank == 0 else []
    if placement == "uneven":  # the 29-token sequence alone on rank 0, the rest on rank 1
        dest = [0 if i == 3 else 1 for i in range(len(seqs))] if rank == 0 else []
    else:
        dest = packing.balance([len(t) for t, _ in seqs], world) if rank == 0 else []
    got = packing.exchange(items, dest, torch.device("cpu"))
    mine = [(t, int(n[0])) for t, n in got]
    index = [int(n[2]) for _, n in got]  # which sequence each received one is
    tc = Config(temperature=T, clip_low=0.2, clip_high=0.28, micro_batch_tokens=24)
    recomputed = policy.old_logprobs(model, mine, tc, 0, torch.device("cpu"))
    old_diff = max([(a - lp_ref[i, : len(a)].detach()).abs().max().item() for a, i in zip(recomputed, index)] or [0.0])
    mets = policy.accumulate_gradients(model, mine, [old_rows[i] for i in index], [adv[i] for i in index], None, n_tok,
                                      coef, tc, 0, torch.device("cpu"))
    n_passes = sum(1 for _ in policy.micro_batches(mine, tc.micro_batch_tokens, 0, torch.device("cpu")))
    n_real = sum(1 for mb, _ in policy.micro_batches(mine, tc.micro_batch_tokens, 0, torch.device("cpu")) if mb)
    tokens = torch.tensor([mets["tokens"], mets["loss"]], dtype=torch.float64)
    dist.all_reduce(tokens)  # over the ranks: every token once, the loss of the whole step
    diff = 0.0
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        diff = max(diff, (p.grad.full_tensor() - q.grad).abs().max().item())
    res = {"rank": rank, "received": len(mine), "tokens": tokens[0].item(), "n_tok": n_tok,
           "passes": n_passes, "real_micro_batches": n_real, "loss_abs_diff": abs(tokens[1].item() - loss_ref.item()),
           "old_logprob_max_abs_diff": old_diff, "grad_max_abs_diff": diff}
    write_result(out, rank, res)  # tests/dist_exit.py


if __name__ == "__main__":
    run_then_exit(main, *sys.argv[1:])
