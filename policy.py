"""The trainable policy: FSDP2 with one host copy, packed micro-batches, the eq. 3.1 update.

Report §3.1 steps 7 and 8: recompute log pi_old with the training model, then take SGD
steps on the MAGIC loss. What makes this work at the 7B recipe's size (16K-32K-token
responses, V = 152,064):

* build_policy: every rank builds the model on the meta device and shards it with
  FSDP2 (one shard group per decoder layer); rank 0 alone reads the checkpoint and
  broadcasts it, each rank keeping its shard. The lm_head is swapped for
  loss.ScoredHead, so logits never exist as a [positions, V] tensor.
* micro_batches: sequences packed end to end (packing.py) up to a token budget, with
  zero-weight dummies so every rank runs the same number of passes.
* score: one packed micro-batch -> log pi(y_t) and H_t of its response tokens.
* old_logprobs / accumulate_gradients: step 7, and step 8's forward + backward with
  the loss divided by the SGD step's global token count (eq. 3.1).

`cfg` is train.py's run config (recipes.Config); only the fields named in each function
are read. Imports: loss.py, packing.py. Exports: build_policy, score, micro_batches,
old_logprobs, accumulate_gradients, AGG_KEYS.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import packing
from loss import ScoredHead, policy_loss


def build_policy(path: str, cfg, device):
    """The policy as an FSDP2 model, with ONE host copy of the weights per job.

    Every rank builds the model's skeleton on the meta device (no memory), swaps the
    lm_head for loss.ScoredHead (the chunked loss head; same weight Parameter), and
    shards it: each decoder layer is its own shard group (its parameters are
    all-gathered just before it runs and freed after), the root holds the embeddings,
    final norm and (tied) lm_head. Only then are shards allocated, and rank 0 -- the
    only rank that reads the checkpoint -- broadcasts the weights tensor by tensor,
    each rank keeping its shard. (Loading a full float32 copy on every rank costs 8 x
    30 GB of host RAM for a 7B model on an 8-GPU node.) Mixed precision: compute in
    `param_dtype`, master weights and gradient reduce-scatter in float32."""
    from accelerate import init_empty_weights
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    from transformers import AutoConfig, AutoModelForCausalLM

    # Attention over packed rows: flash-attention's variable-length kernels where they
    # exist, else causal SDPA per packed sequence (packing.packed_sdpa).
    import importlib.util

    flash = device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None
    attn = "flash_attention_2" if flash else packing.register_packed_attention()
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (RoPE) real
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32,
                                                 attn_implementation=attn)
    model.tie_weights()  # the meta skeleton loses the embedding <-> lm_head tie; restore it
    model.lm_head = ScoredHead(model.lm_head, cfg.head_chunk_tokens)
    if cfg.grad_checkpointing == "on":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # to_empty() wipes them
    mp = MixedPrecisionPolicy(param_dtype=getattr(torch, cfg.param_dtype), reduce_dtype=torch.float32)
    kw = dict(mp_policy=mp, offload_policy=CPUOffloadPolicy() if cfg.cpu_offload else None)
    kw = {k: v for k, v in kw.items() if v is not None}
    for layer in model.model.layers:
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    model.to_empty(device="cpu" if cfg.cpu_offload else device)  # allocate this rank's shards
    for n, b in model.named_buffers():
        b.copy_(buffers[n])
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict() if dist.get_rank() == 0 else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    return model


def score(model, mb: dict, temperature: float, with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One packed micro-batch (packing.pack) through the policy: log pi(y_t) and the
    full-vocabulary entropy H_t of its scored tokens, [n] each (float32). The decoder
    runs on every token; the loss head (loss.ScoredHead) only on the scored positions,
    in chunks, inside the FSDP2 root's forward."""
    head = model.lm_head
    head.targets, head.temperature, head.with_entropy = mb["targets"], temperature, with_entropy
    # packed_sdpa takes the sequence boundaries as plain ints (no GPU sync per layer);
    # flash-attention reads them from position_ids itself.
    extra = {"packed_cuts": mb["cuts"]} if model.config._attn_implementation == "packed_sdpa" else {}
    out = model(input_ids=mb["input_ids"], position_ids=mb["position_ids"], logits_to_keep=mb["positions"],
                use_cache=False, **extra).logits[0]  # [n, 2]: (log pi, H)
    head.targets = None
    return out[:, 0], out[:, 1]


def micro_batches(seqs: list[tuple[list[int], int]], budget: int, pad_id: int, device):
    """Packed micro-batches of `seqs` ((token ids, prompt length) pairs) of at most
    `budget` tokens each, plus zero-weight dummies up to the largest count over ranks
    (FSDP2: every rank runs the same number of forward/backward passes). Yields
    (positions into seqs, packed batch); positions is [] for a dummy."""
    plan = packing.pad_plan(packing.plan([len(t) for t, _ in seqs], budget))
    for mb in plan:
        if mb is None:
            yield [], packing.dummy_pack(pad_id, device)
        else:
            yield mb, packing.pack([seqs[i] for i in mb], device)


def old_logprobs(model, seqs: list[tuple[list[int], int]], cfg, pad_id: int, device) -> list[torch.Tensor]:
    """log pi(y_t) of every response token of every (tokens, prompt length) sequence under
    `model`, without gradients: one [R_i] CPU tensor per sequence (step 7)."""
    out: list = [None] * len(seqs)
    with torch.no_grad():
        for mb, b in micro_batches(seqs, cfg.micro_batch_tokens, pad_id, device):
            lp, _ = score(model, b, cfg.temperature, with_entropy=False)  # [n]
            for i, part in zip(mb, lp.split(b["lengths"])):  # a dummy has mb == []
                out[i] = part.cpu()
    # FSDP2 keeps the ROOT's parameters gathered after its forward (they are needed again
    # in backward). After forwards that have no backward -- this one, and every forward
    # of the KL reference model -- nothing would free them: the bf16 embeddings and
    # lm_head (2 GiB for the 7B) would stay through the rollout, outside the memory plan.
    model.reshard()
    return out


AGG_KEYS = ("clip_frac_low", "clip_frac_high", "approx_kl", "ratio_mean", "entropy_full", "tokens")


def accumulate_gradients(model, seqs: list, old_lp: list, adv: list[float], ref_lp: list | None, denom: float,
                         coef: float, cfg, pad_id: int, device) -> dict[str, float]:
    """Forward + backward of eq. 3.1 over this rank's share of one SGD step (step 8):
    packed micro-batches, the chunked loss head, loss divided by `denom` (the step's
    global token count), gradients accumulated in the parameters. Returns token-weighted
    metric sums (AGG_KEYS, + kl_ref) and "loss": this rank's share of the step's eq. 3.1
    loss (summed over the ranks, the loss of the whole SGD step)."""
    world = dist.get_world_size()
    agg = dict.fromkeys(AGG_KEYS + (("kl_ref",) if ref_lp is not None else ()), 0.0)
    loss_sum = 0.0  # already divided by the global count: a plain sum, not token-weighted
    for mb, b in micro_batches(seqs, cfg.micro_batch_tokens, pad_id, device):
        lp, ent = score(model, b, cfg.temperature)  # [n] each, with grad
        lp, ent = packing.per_sequence(lp, b["lengths"]), packing.per_sequence(ent, b["lengths"])  # [S, R]
        lengths = torch.tensor(b["lengths"], device=device)
        mask = (torch.arange(lp.shape[1], device=device) < lengths[:, None]).to(lp.dtype)  # [S, R]
        if not mb:
            mask.zero_()  # a dummy micro-batch: its one token carries no weight
        rows = lambda vs: packing.per_sequence(torch.cat(vs).to(device, lp.dtype), b["lengths"]) if mb else torch.zeros_like(lp)  # noqa: E731
        olp = rows([old_lp[i] for i in mb])  # [S, R]
        rlp = rows([ref_lp[i] for i in mb]) if ref_lp is not None else None
        adv_b = torch.tensor([adv[i] for i in mb] or [0.0], device=device, dtype=lp.dtype)  # [S]
        loss, mets = policy_loss(lp, olp, adv_b, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high, entropy=ent,
                                 entropy_coef=coef, ref_logprobs=rlp, kl_coef=cfg.kl_coef, agg=cfg.loss_agg,
                                 num_tokens=denom)
        # FSDP2 *averages* gradients over ranks; the loss is already divided by the global
        # count, so scale by world size to get the one-big-batch gradient (checked in
        # float64 by tests/dist_grad_check.py and tests/dist_pack_check.py).
        (loss * world).backward()
        loss_sum += float(loss.detach())
        mets["entropy_full"] = mets["entropy"]  # full-vocabulary H of the update's forward
        for k in agg:
            agg[k] += mets["tokens"] if k == "tokens" else mets[k] * mets["tokens"]
    return {**agg, "loss": loss_sum}
