"""How the FSDP2 torchrun children in tests/ (dist_grad_check, dist_pack_check,
dist_load_check) end: each rank writes its result as OUT/rank<r>.json, the group is
destroyed after a barrier, and the process leaves without interpreter teardown.
(dist_sync_check.py holds a vLLM engine, whose own exit handler tears its group down.)

The gloo group outlives destroy_process_group (it is held from C++: a weak reference to
it still resolves after every Python reference is gone), so its worker threads are torn
down during exit, where they can abort a process whose results are already written
("terminate called without an active exception", SIGABRT: seen once in CI, on
dist_pack_check.py's uneven case). os._exit skips that teardown. It runs only after
main() has returned: every file is closed and the group destroyed. An exception in
main() still propagates and fails the rank as usual.
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist


def write_result(out: str, rank: int, result: dict) -> None:
    """OUT/rank<r>.json for the test to read; then nobody leaves before the others."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def run_then_exit(main, *args) -> None:
    main(*args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
