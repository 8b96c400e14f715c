"""Run under torchrun (2 gloo ranks): policy.build_policy -- a meta-device skeleton on
every rank, FSDP2 shards, rank 0 alone reading the checkpoint and broadcasting it --
ends with exactly the checkpoint's weights in every shard. Usage: dist_load_check.py
OUT MODEL_DIR

Every parameter (and buffer: RoPE's inv_freq is rebuilt, not loaded) of the sharded
model is gathered (`full_tensor`, a collective) and compared bit for bit with
`from_pretrained` of the same folder in float32, on every rank; the lm_head must still
share the embedding's storage when the config ties them. Writes OUT/rank<r>.json.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import policy  # noqa: E402
from recipes import Config  # noqa: E402


def main(out: str, model_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    from transformers import AutoModelForCausalLM

    model = policy.build_policy(model_dir, Config(grad_checkpointing="off"), torch.device("cpu"))
    want = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    want_params = dict(want.named_parameters())
    diffs, names = {}, []
    for name, p in model.named_parameters():  # the same order on every rank: full_tensor is a collective
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        names.append(name)
        diffs[name] = (full.detach() - want_params[name].detach()).abs().max().item()
    buf_diff = max((b - dict(want.named_buffers())[n]).abs().max().item() for n, b in model.named_buffers())
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    res = {"rank": rank, "params": sorted(names), "want": sorted(want_params), "max_abs_diff": max(diffs.values()),
           "buffer_max_abs_diff": buf_diff, "lm_head_is_embedding": tied}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
    # Leave without interpreter teardown. The gloo group outlives destroy_process_group
    # (held from C++: a weak reference to it still resolves after every Python reference
    # is gone), so its worker threads are torn down during exit, where they can abort a
    # process whose results are already written ("terminate called without an active
    # exception", SIGABRT: seen once in CI, on the uneven case). os._exit skips that
    # teardown; main() has returned, so every file is closed and the group destroyed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
