"""Run under torchrun (2 gloo ranks): --dist-timeout-min reaches the process group.
Usage: dist_timeout_check.py OUT MINUTES WAIT_S

Both ranks join exactly as train.start_stage does (recipes.parse_config, then
distributed.join with the config's timeout). Rank 1 then sleeps WAIT_S seconds before
an all_reduce; rank 0 enters it at once and measures how long it waits. With a timeout
shorter than WAIT_S rank 0's collective fails after about the timeout; with a longer one
it completes. Each rank writes OUT/rank<r>.json (ok, error, seconds waited) and leaves
with os._exit: after a failed collective the group cannot be torn down cleanly.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import distributed  # noqa: E402
from recipes import parse_config  # noqa: E402


def main(out: str, minutes: str, wait_s: str) -> None:
    cfg = parse_config(["--dist-timeout-min", minutes])
    rank, _, _ = distributed.join(cfg.cpu_offload, cfg.dist_timeout_min)
    if rank == 1:
        time.sleep(float(wait_s))
    t0, result = time.monotonic(), {"ok": True, "error": ""}
    try:
        torch.distributed.all_reduce(torch.ones(1))
    except Exception as e:  # gloo raises on its timeout (NCCL's watchdog would abort the job)
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    result["waited_s"] = time.monotonic() - t0
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)
