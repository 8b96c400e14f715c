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
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"max_abs_diff": diff}))
    dist.barrier()
    dist.destroy_process_group()  # then os._exit below: see there


if __name__ == "__main__":
    main(sys.argv[1])
    # Leave without interpreter teardown. The gloo group outlives destroy_process_group
    # (held from C++: a weak reference to it still resolves after every Python reference
    # is gone), so its worker threads are torn down during exit, where they can abort a
    # process whose results are already written ("terminate called without an active
    # exception", SIGABRT: seen once in CI, on the uneven case). os._exit skips that
    # teardown; main() has returned, so every file is closed and the group destroyed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
