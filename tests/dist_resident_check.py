"""Run under torchrun (2 gloo ranks): what the trainer keeps between steps is what the
memory plan counts for the rollout phase. Usage: dist_resident_check.py OUT MODEL_DIR

1. A real update (policy.build_policy, packed micro-batch, eq. 3.1 backward, AdamW step,
   zero_grad) then step 7's no-grad pass (policy.old_logprobs): every parameter must be
   a sharded DTensor again, and the bytes this rank holds -- parameter shards plus AdamW
   state -- are reported, for the test to compare with memory_plan's "trainer:
   parameters + AdamW shards".
2. The defect old_logprobs guards against: a bare no-grad forward (policy.score) of an
   FSDP2 model leaves the ROOT's parameters gathered (FSDP2 does not reshard the root
   after forward, torch/distributed/fsdp/_fully_shard/_fsdp_state.py:203-207); the KL
   reference model only ever runs such forwards. Reported before and after.
Writes OUT/rank<r>.json.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dist_exit import run_then_exit, write_result  # noqa: E402  (tests/dist_exit.py)
import packing  # noqa: E402
import policy  # noqa: E402
from recipes import Config  # noqa: E402


def unsharded(model) -> list[str]:
    """Names of parameters registered as plain tensors (gathered), not DTensor shards."""
    return [n for n, p in model.named_parameters() if not isinstance(p, DTensor)]


def main(out: str, model_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, dev = dist.get_rank(), torch.device("cpu")
    cfg = Config(grad_checkpointing="off", micro_batch_tokens=64, param_dtype="float32")
    torch.manual_seed(rank)
    seqs = [(torch.randint(3, 200, (12,)).tolist(), 5) for _ in range(3)]  # (tokens, prompt length)

    # 1. the policy through one real step, then step 7's pass
    model = policy.build_policy(model_dir, cfg, dev)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    old = policy.old_logprobs(model, seqs, cfg, 0, dev)
    policy.accumulate_gradients(model, seqs, old, [1.0, -1.0, 0.5], None, 30.0, 0.0, cfg, 0, dev)
    optim.step()
    optim.zero_grad(set_to_none=True)
    policy.old_logprobs(model, seqs, cfg, 0, dev)
    shards = sum(p.to_local().numel() * p.to_local().element_size() for p in model.parameters())
    state = sum(t.to_local().numel() * t.to_local().element_size() if isinstance(t, DTensor) else t.numel() * t.element_size()
                for st in optim.state.values() for t in st.values() if torch.is_tensor(t) and t.dim() > 0)
    grads = [n for n, p in model.named_parameters() if p.grad is not None]

    # 2. a reference model: no-grad forwards only
    ref = policy.build_policy(model_dir, cfg, dev)
    with torch.no_grad():
        policy.score(ref, packing.pack(seqs, dev), 1.0, with_entropy=False)
    gathered_after_bare_forward = unsharded(ref)
    policy.old_logprobs(ref, seqs, cfg, 0, dev)
    write_result(out, rank, {"unsharded_after_step": unsharded(model), "param_bytes": shards, "adam_bytes": state,
                             "grads_left": grads, "ref_gathered_after_bare_forward": gathered_after_bare_forward,
                             "ref_unsharded_after_old_logprobs": unsharded(ref)})


if __name__ == "__main__":
    run_then_exit(main, *sys.argv[1:])
