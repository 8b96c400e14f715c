"""The few distributed operations the trainer, the evaluator and the data tools share.

Everything in this project runs the same way under `torchrun --nproc_per_node=N` and as
a plain `python script.py`: the latter becomes a one-rank process group, so there is a
single code path. Ranks are global (RANK, WORLD_SIZE), devices are picked by LOCAL_RANK,
so `torchrun --nnodes` spans machines unchanged.

    rank, world, device = join(timeout_min=60)  # gloo on CPU, nccl on GPU; collective timeout
    path = on_rank0(lambda: read())         # rank 0 computes, every rank gets the result
    path = per_node(lambda: convert())      # each node's local rank 0 first, then its other ranks
    check_shared_folder(out, "--output-dir")  # refuse unless every node sees the same folder
    totals = all_sum({"tokens": n})         # one collective for a dict of scalars
    longest = all_max(len(x))
    parts = all_gather(my_list)             # every rank's list, concatenated in rank order
    print0("only rank 0 prints this")
    quiet_console(verbose)                  # vLLM / transformers INFO lines off

Several nodes (`torchrun --nnodes N`): nothing here assumes a shared home or cache. What
a node prepares for itself (the embedded model's conversion into its cache) runs on that
node's local rank 0 (`per_node`); what every rank must read and write (the run folder)
must be one shared folder, which `check_shared_folder` proves at start.

This file imports torch only (transformers lazily, for its logging). Exports: join,
DEFAULT_TIMEOUT_MIN, on_rank0, per_node, node_rank, check_shared_folder, all_sum, all_max,
all_gather, print0, quiet_console.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
from pathlib import Path

import torch
import torch.distributed as dist

# How long a rank may wait in one collective before the job is failed. torch's defaults
# are 10 min for NCCL and 30 for gloo. The longest wait of a training step is the first
# collective after rollout + grading, where every rank waits for the slowest one: the
# report's 32B run averaged 13.4 min of rollout and 3.5 min of "others" (rewards among
# them) per step (Table 7: 223 h and 59 h over 1000 steps), and a rank whose batch holds
# the longest response can be behind by most of that. 60 min is ~3.5x the 32B's mean
# rollout + others, and covers rank 0 writing a 30 GB final folder while the others wait.
DEFAULT_TIMEOUT_MIN = 60.0


def join(cpu_offload: bool = False, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> tuple[int, int, torch.device]:
    """Join the torchrun group, or become a one-rank group outside torchrun.

    gloo on CPU, nccl on GPU, with `timeout_min` for every collective of the default
    group (train.py --dist-timeout-min). With cpu_offload on GPUs the group gets a CPU
    backend beside NCCL ("cpu:gloo,cuda:nccl"), so collectives on offloaded (CPU)
    tensors -- FSDP2's gradient-norm reduction over CPU shards, say -- work too. Joining
    twice is a no-op."""
    if "RANK" not in os.environ:  # plain `python ...`: a group of one on a free local port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    local_rank = int(os.environ["LOCAL_RANK"])
    timeout = datetime.timedelta(minutes=timeout_min)
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("cpu:gloo,cuda:nccl" if cpu_offload else "nccl", device_id=device, timeout=timeout)
    else:
        device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), device


def _device() -> torch.device:
    """Where collectives' tensors live: the GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _world() -> int:
    """Ranks in the group; 1 when there is none (a function called outside join())."""
    return dist.get_world_size() if dist.is_initialized() else 1


def on_rank0(fn):
    """Run fn() on rank 0 only and broadcast its (picklable) result to every rank: work
    that must happen once (converting the embedded model, reading a results file)."""
    value = fn() if _world() == 1 or dist.get_rank() == 0 else None
    if _world() > 1:
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        value = holder[0]
    return value


def node_rank() -> int:
    """This node's index in the job (torchrun's GROUP_RANK; 0 outside torchrun)."""
    return int(os.environ.get("GROUP_RANK", 0))


def per_node(fn):
    """Node-local preparation: fn() on each node's local rank 0 first (converting the
    embedded model into THAT node's cache, say), then on the node's other ranks, which
    find its result there. Nothing assumes the nodes share a home or a cache."""
    if _world() == 1:
        return fn()
    first = int(os.environ.get("LOCAL_RANK", 0)) == 0
    value = fn() if first else None
    dist.barrier()  # the node's local rank 0 is done (a barrier of every rank: simple, once per run)
    return value if first else fn()


def check_shared_folder(folder: Path, flag: str) -> None:
    """Refuse to start unless every node sees `folder` as the same folder: each node's
    local rank 0 writes a marker into it, and rank 0 must see every node's. Rank 0 alone
    creates, renames and deletes the run's folders and the others read them (a stage's
    start model, --resume's checkpoints), so node-local disks cannot work."""
    if _world() == 1:
        return
    nodes = int(os.environ.get("WORLD_SIZE", 1)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    token = on_rank0(lambda: secrets.token_hex(6))  # this job's markers, never an old run's
    marks = Path(folder) / f".nodes-{token}"
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        marks.mkdir(parents=True, exist_ok=True)
        (marks / f"node{node_rank()}").write_text(socket.gethostname())
    dist.barrier()
    seen = on_rank0(lambda: sorted(p.name for p in marks.iterdir()))  # broadcast: every rank gets the verdict
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # each node removes its own marker
        (marks / f"node{node_rank()}").unlink(missing_ok=True)
        try:
            marks.rmdir()
        except OSError:  # another node's marker is still there (that node removes the folder)
            pass
    if len(seen) != nodes:
        raise SystemExit(f"{flag} {folder} is not one folder that every node sees: rank 0 finds the markers of "
                         f"{len(seen)} of {nodes} nodes ({', '.join(seen)}). Point {flag} at a shared file system "
                         f"(NFS, Lustre, ...) mounted at the same path on every node.")


def all_sum(values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of scalars over ranks, in one collective (float64)."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def all_max(x: float) -> float:
    """The largest value over ranks."""
    t = torch.tensor([float(x)], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def all_gather(items: list) -> list:
    """Every rank's (picklable) list, concatenated in rank order, on every rank."""
    if _world() == 1:
        return list(items)
    parts = [None] * _world()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def print0(*args) -> None:
    """print on rank 0 only (or when no group exists), flushed."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, flush=True)


def quiet_console(verbose: bool) -> None:
    """A quiet console unless `verbose`: vLLM's and transformers' INFO/WARNING lines (an
    engine call, a weight reload, a load bar each) and the warnings that only repeat
    library internals off. Errors, and warnings of this project's own code, still print.
    Environment defaults reach the libraries not imported yet (vLLM reads its level at
    import); the loggers of those already imported are set directly."""
    if verbose:
        return
    import logging
    import warnings

    for var, level in (("VLLM_LOGGING_LEVEL", "ERROR"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(var, level)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("vllm").setLevel(logging.ERROR)
    # Library-internal deprecations (vLLM, torch, transformers), not ours.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(vllm|torch|transformers)(\..*)?")
