"""Run under torchrun (2 gloo ranks): the token-mean loss (eq. 3.1) gives the one-big-batch
gradient under data parallelism + FSDP2 + gradient accumulation, in float64.

Every rank builds the same small float64 model, keeps an unsharded copy for the
reference, and FSDP2-shards the other. The reference is the gradient of the loss over
the whole batch in one piece. The distributed run gives each rank half of the rows,
split again into micro-batches, divides by the *global* token count (as train.py does)
and multiplies by the world size (FSDP2 averages gradients over ranks). Writes the max
absolute difference to <out>/rank<r>.json.
"""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dist_exit import run_then_exit, write_result  # noqa: E402  (tests/dist_exit.py)
from loss import entropy_from_logits, policy_loss, token_logprobs  # noqa: E402


def loss_of(model, tokens, old, adv, mask, rows, n_tok):
    logits = model(tokens[rows])  # [b, T, V]
    lp = token_logprobs(logits, tokens[rows]).double()
    ent = entropy_from_logits(logits).double()
    loss, _ = policy_loss(lp, old[rows], adv[rows], mask[rows], clip_low=0.2, clip_high=0.28,
                          entropy=ent, entropy_coef=0.003, num_tokens=n_tok)
    return loss


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # identical data and init on every rank
    V, D, B, T = 17, 8, 8, 6
    model = torch.nn.Sequential(torch.nn.Embedding(V, D), torch.nn.Linear(D, V)).double()
    tokens = torch.randint(0, V, (B, T))
    mask = (torch.rand(B, T) > 0.25).double()
    with torch.no_grad():
        old = token_logprobs(model(tokens), tokens).double() + 0.2 * torch.randn(B, T, dtype=torch.float64)
    adv = torch.randn(B, dtype=torch.float64)
    n_tok = mask.sum()

    ref = copy.deepcopy(model)  # (a) one big batch, one process
    loss_of(ref, tokens, old, adv, mask, list(range(B)), n_tok).backward()

    from torch.distributed.fsdp import fully_shard

    fully_shard(model)
    mine = list(range(rank, B, world))  # this rank's rows
    for mb in (mine[:1], mine[1:3], mine[3:]):  # (b) + (c): micro-batches on 2 ranks
        (loss_of(model, tokens, old, adv, mask, mb, n_tok) * world).backward()
    diff = 0.0
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        g = p.grad.full_tensor()
        diff = max(diff, (g - q.grad).abs().max().item())
    write_result(out, rank, {"max_abs_diff": diff})  # tests/dist_exit.py


if __name__ == "__main__":
    run_then_exit(main, sys.argv[1])
