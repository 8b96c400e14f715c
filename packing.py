"""Padding-free micro-batches: sequences packed end to end, spread over ranks by tokens.

Report §3.1 step 8 trains on G responses per prompt whose lengths differ by orders of
magnitude (a 300-token answer beside a 32K-token one). Padding every sequence of a
micro-batch to the longest wastes most of the compute and memory, and giving each rank
"its own" groups leaves one rank with 4x the tokens of another while the rest wait. So:

* balance: the SGD step's sequences are assigned to ranks by token count, greedily
  (longest first, to the rank with the fewest tokens so far; the released verl code
  balances with a Karmarkar-Karp partition for the same purpose), and sent there
  (`exchange`, one all-to-all of token ids);
* plan: each rank's sequences go into micro-batches of at most `budget` real tokens
  (first-fit decreasing; a sequence longer than the budget gets a micro-batch of its own
  and the loss head walks it in chunks);
* pack: a micro-batch is ONE row of concatenated sequences, `position_ids` restarting
  at 0 for each, no attention mask: transformers then builds a block-diagonal causal
  mask (sdpa/eager) or variable-length kernels (flash-attention), so no token attends
  across a sequence boundary. Only the positions whose next token is a response token
  are scored (`positions`, `targets`), which is where the loss head runs.

    sequence i:  [p p p p r r r]   prompt P=4, response R=3
    scored:           ^ ^ ^        positions P-1 .. P+R-2 predict the response tokens

Every rank must run the same number of forward/backward passes (FSDP2 all-gathers
parameters inside each), so `pad_plan` appends zero-weight dummy micro-batches.

Attention over a packed row: on GPUs with flash-attention, transformers' own
"flash_attention_2" reads the boundaries from position_ids (variable-length kernels).
Elsewhere (CPU, no flash-attn) `register_packed_attention` installs "packed_sdpa": the
row is cut at the boundaries and each sequence runs PyTorch's causal SDPA on its own,
so the work is sum(L_i^2) -- a dense block-diagonal mask over the whole row would cost
(sum L_i)^2, 16x more for 16 sequences.

Imports: distributed.py (transformers for the attention registration). Exports:
balance, plan, pad_plan, pack, dummy_pack, per_sequence, exchange,
register_packed_attention.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import distributed


def balance(lengths: list[int], n_ranks: int) -> list[int]:
    """The rank of each sequence, so that token counts per rank are as even as the
    greedy longest-first rule makes them. Deterministic (ties: lower index, lower rank).

    >>> balance([10, 1, 1, 8, 2], 2)  # rank 0: 10 + 1, rank 1: 8 + 2 + 1
    [0, 0, 1, 1, 1]
    """
    load = [0] * n_ranks
    owner = [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        r = min(range(n_ranks), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += lengths[i]
    return owner


def plan(lengths: list[int], budget: int) -> list[list[int]]:
    """Micro-batches (lists of positions into `lengths`) of at most `budget` tokens each,
    first-fit decreasing. A sequence longer than the budget forms its own micro-batch.

    >>> plan([5, 3, 9, 2, 4], budget=8)
    [[2], [0, 1], [4, 3]]
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b in range(len(bins)):
            if lengths[i] <= room[b]:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return bins


def pad_plan(mbs: list) -> list:
    """Append None (a zero-weight dummy micro-batch) up to the largest count over ranks."""
    n = int(distributed.all_max(len(mbs))) if dist.is_initialized() else len(mbs)
    return mbs + [None] * (n - len(mbs))


def pack(seqs: list[tuple[list[int], int]], device) -> dict:
    """One packed row from (token ids, prompt length) pairs.

    Returns input_ids / position_ids [1, N]; positions [n] (indices into N of the scored
    positions) and targets [n] (the response tokens they predict); lengths (response
    tokens per sequence, summing to n); cuts (where each sequence starts in the row, and
    N: plain ints, so packed_sdpa never reads them back from the GPU).

    >>> b = pack([([7, 8, 9], 2), ([5, 6], 1)], "cpu")
    >>> b["position_ids"].tolist(), b["positions"].tolist(), b["targets"].tolist(), b["lengths"], b["cuts"]
    ([[0, 1, 2, 0, 1]], [1, 3], [9, 6], [1, 1], [0, 3, 5])
    """
    ids, pos, scored, targets, lengths, cuts = [], [], [], [], [], [0]
    offset = 0
    for tokens, p in seqs:
        L = len(tokens)
        if not 0 < p < L:
            raise ValueError(f"a sequence needs a prompt and a response: prompt {p} of {L} tokens")
        ids += tokens
        pos += range(L)
        scored += range(offset + p - 1, offset + L - 1)  # position t predicts token t + 1
        targets += tokens[p:]
        lengths.append(L - p)
        offset += L
        cuts.append(offset)
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return {"input_ids": as_long([ids]), "position_ids": as_long([pos]), "positions": as_long(scored),
            "targets": as_long(targets), "lengths": lengths, "cuts": cuts}


def dummy_pack(pad_id: int, device) -> dict:
    """A two-token micro-batch whose one scored token gets weight 0 (see pad_plan)."""
    return pack([([pad_id, pad_id], 1)], device)  # policy.accumulate_gradients zeroes its weight


def per_sequence(values: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """[n] packed per-token values -> [S, max R] right-padded with 0 (differentiable), the
    [B, T] layout loss.policy_loss takes. Mask with `torch.arange(R) < length`.

    >>> per_sequence(torch.tensor([1., 2., 3.]), [2, 1]).tolist()
    [[1.0, 2.0], [3.0, 0.0]]
    """
    return torch.nn.utils.rnn.pad_sequence(list(values.split(lengths)), batch_first=True)


def exchange(items: list[tuple[list[int], list[float]]], dest: list[int], device) -> list[tuple[list[int], list[float]]]:
    """Send each (token ids, per-sequence numbers) pair to rank `dest[i]`; returns what
    this rank receives, ordered by (source rank, position at the source). The numbers
    (e.g. prompt length, advantage, mini-batch) travel as float64, exact for all of them;
    every item carries the same count of them.

    A collective: every rank calls it. One all-to-all of the counts, one of the flattened
    token ids, one of the numbers. One rank: returns the items unchanged."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(items)
    world = dist.get_world_size()
    width = 1 + (len(items[0][1]) if items else 0)  # [length, numbers...]
    widths = torch.tensor([width], device=device)
    dist.all_reduce(widths, op=dist.ReduceOp.MAX)  # a rank with nothing to send still knows the width
    width = int(widths.item())
    order = sorted(range(len(items)), key=lambda i: (dest[i], i))  # grouped by destination
    counts = torch.zeros(world, 2, dtype=torch.int64)  # [sequences, tokens] this rank sends to each rank
    for i in order:
        counts[dest[i], 0] += 1
        counts[dest[i], 1] += len(items[i][0])
    got = torch.empty(world * 2, dtype=torch.int64, device=device)
    dist.all_to_all_single(got, counts.view(-1).to(device))  # row r: what rank r sends to this rank
    got = got.view(world, 2).cpu()
    tokens = torch.tensor([t for i in order for t in items[i][0]], dtype=torch.int64, device=device)
    nums = torch.tensor([[len(items[i][0]), *items[i][1]] for i in order], dtype=torch.float64, device=device)
    tok_out = torch.empty(int(got[:, 1].sum()), dtype=torch.int64, device=device)
    dist.all_to_all_single(tok_out, tokens, output_split_sizes=got[:, 1].tolist(), input_split_sizes=counts[:, 1].tolist())
    num_out = torch.empty(int(got[:, 0].sum()) * width, dtype=torch.float64, device=device)
    dist.all_to_all_single(num_out, nums.view(-1), output_split_sizes=(got[:, 0] * width).tolist(),
                           input_split_sizes=(counts[:, 0] * width).tolist())
    out, at = [], 0
    toks = tok_out.tolist()
    for row in num_out.view(-1, width).tolist():
        L = int(row[0])
        out.append((toks[at: at + L], row[1:]))
        at += L
    return out


def _boundaries(position_ids: torch.Tensor) -> list[int]:
    """Start of each packed sequence (where the position does not continue by 1), + end."""
    pos = position_ids.reshape(-1)
    starts = [0] + (torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1).tolist()
    return starts + [pos.numel()]


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, position_ids=None,
                packed_cuts: list[int] | None = None, **kwargs):
    """transformers attention function for one packed row: causal SDPA per sequence.
    query [1, heads, N, d]; key, value [1, kv_heads, N, d] -> ([1, N, heads, d], None).

    The boundaries come as plain ints (`packed_cuts`, pack()'s "cuts", passed by
    policy.score through the model's keyword arguments): reading them from position_ids
    would copy a GPU tensor to the host -- a device sync -- in every layer, and again
    in every recomputed layer under gradient checkpointing. Without them (a caller that
    passes only position_ids) they are read from position_ids."""
    if query.shape[0] != 1 or (packed_cuts is None and position_ids is None):
        raise ValueError("packed_sdpa needs one packed row and its cuts or position_ids (packing.pack)")
    cuts = packed_cuts if packed_cuts is not None else _boundaries(position_ids)
    outs = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, dropout_p=dropout,
        enable_gqa=key.shape[1] != query.shape[1]) for a, b in zip(cuts, cuts[1:])]
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Register "packed_sdpa" with transformers (attention + a no-op mask builder: the
    boundaries come from position_ids) and return the name for attn_implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register("packed_sdpa", packed_sdpa)
    AttentionMaskInterface.register("packed_sdpa", lambda *args, **kwargs: None)
    return "packed_sdpa"
