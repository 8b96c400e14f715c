"""Run under torchrun (2 gloo ranks): policy.build_policy -- a meta-device skeleton on
every rank, FSDP2 shards, rank 0 alone reading the checkpoint and broadcasting it --
ends with exactly the checkpoint's weights in every shard. Usage: dist_load_check.py
OUT MODEL_DIR

Every parameter (and buffer: RoPE's inv_freq is rebuilt, not loaded) of the sharded
model is gathered (`full_tensor`, a collective) and compared bit for bit with
`from_pretrained` of the same folder in float32, on every rank; the lm_head must still
share the embedding's storage when the config ties them. Writes OUT/rank<r>.json.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dist_exit import run_then_exit, write_result  # noqa: E402  (tests/dist_exit.py)
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
    write_result(out, rank, res)  # tests/dist_exit.py


if __name__ == "__main__":
    run_then_exit(main, *sys.argv[1:])
