"""Checkpoints: resumable training state and plain transformers folders, written atomically.

A multi-day run (report §8.1: 660 steps per stage on 32-64 GPUs) will be interrupted;
what matters is that an interruption never costs more than the steps since the last
checkpoint and never leaves a checkpoint that *looks* complete but is not.

* save_checkpoint / load_checkpoint: model + optimizer as torch.distributed.checkpoint
  (DCP) shards (each rank writes its FSDP2 shard; nothing is gathered), plus the
  trainer's own state (step, entropy controller, data order, RNG states, prompt
  statistics). Written to step_<k>.tmp/, renamed to step_<k>/ when every rank is done.
* latest_checkpoint: the newest complete step_<k>/ (ignores *.tmp and folders without
  meta.json); newest_loadable: the newest one whose files are intact (why_unreadable:
  bad meta.json, a missing or corrupt rank file, a missing or truncated shard), for
  `train.py --resume`, which falls back to an older one and says why.
* save_hf: a plain transformers folder (config + safetensors + tokenizer) that
  transformers and vLLM load directly; the stage's final model.

Imports: nothing of the project (torch, torch.distributed.checkpoint). Exports:
save_checkpoint, load_checkpoint, latest_checkpoint, complete_checkpoints, why_unreadable,
newest_loadable, save_hf, fsync, rng_state, set_rng_state.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
import torch.distributed as dist


def fsync(path: Path) -> None:
    """Force a file's data, or a folder's entries, to disk (a folder is fsynced through a
    read-only descriptor, as POSIX allows)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_hf(model, tokenizer, folder: Path) -> None:
    """A plain transformers folder (loadable by transformers and vLLM), written
    atomically: a temp folder, then rename."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for f in [*tmp.iterdir(), tmp]:  # on disk before the rename shows it complete
            fsync(f)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    dist.barrier()


def save_checkpoint(root: Path, done: int, model, optim, meta: dict, rank_state: dict, keep: int) -> Path:
    """A resumable checkpoint after `done` steps of this stage: <root>/step_<done>/.

    * model + optimizer: torch.distributed.checkpoint (DCP) shards, each rank writing its
      own FSDP2 shard in parallel; nothing is gathered onto one rank.
    * meta.json (rank 0): step, entropy controller, data order, config.
    * rank<r>.pt: what differs per rank (RNG states, this rank's prompt statistics).

    Atomic: everything goes to step_<done>.tmp/, every rank fsyncs what it wrote,
    and only then rank 0 renames the folder. A crash at any moment leaves
    either the old set of complete checkpoints or the new one, never a half-written
    folder under a complete-looking name (load_checkpoint ignores *.tmp)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank = dist.get_rank()
    final, tmp = root / f"step_{done:08d}", root / f"step_{done:08d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optim)  # sharded (DTensor) state dicts
    # DCP fsyncs every shard file it writes (FileSystemWriter(sync_files=True), torch
    # distributed/checkpoint/filesystem.py:470-472) and its .metadata (:775-777).
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    # Each rank then forces what DCP does not to disk: its own rank file and the folder's
    # entries -- on its own node, so several nodes need no rank-0 `os.sync()` (which
    # flushes the whole machine's dirty pages and none of the other nodes').
    torch.save(rank_state, tmp / f"rank{rank}.pt")
    fsync(tmp / f"rank{rank}.pt")
    fsync(tmp)
    dist.barrier()  # every rank's files are on disk
    if rank == 0:
        (tmp / "meta.json").write_text(json.dumps(meta))
        fsync(tmp / "meta.json")
        fsync(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # only now does the checkpoint look complete
        fsync(root)  # the rename itself survives a power cut
        for old in sorted(p for p in root.glob("step_*") if not p.name.endswith(".tmp"))[:-keep or None]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder (renamed, with meta.json), or None."""
    done = complete_checkpoints(root)
    return done[0] if done else None


def complete_checkpoints(root: Path) -> list[Path]:
    """Every complete checkpoint folder (renamed, with meta.json), newest first."""
    done = [p for p in root.glob("step_*") if not p.name.endswith(".tmp") and (p / "meta.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]), reverse=True)


def why_unreadable(folder: Path) -> str | None:
    """Why `folder` cannot be loaded, or None. Checked from the files alone, before any
    rank starts loading (a load that fails on one rank only would hang the others in a
    collective): meta.json parses; every rank file of the world that wrote it is there
    and is an intact archive (torch.save writes a zip; its CRCs are checked); DCP's
    .metadata reads, and every shard file holds all the bytes it indexes (a half-copied
    or truncated shard)."""
    import zipfile

    from torch.distributed.checkpoint import FileSystemReader

    try:
        meta = json.loads((folder / "meta.json").read_text())
        world = int(meta["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"meta.json unreadable ({type(e).__name__}: {e})"
    for r in range(world):
        f = folder / f"rank{r}.pt"
        if not f.exists():
            return f"{f.name} missing (written by {world} ranks)"
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{f.name} unreadable ({e})"
        if bad is not None:
            return f"{f.name} corrupt (member {bad})"
    try:
        storage = FileSystemReader(str(folder)).read_metadata().storage_data
    except Exception as e:  # DCP raises several types for a missing or torn .metadata
        return f"DCP .metadata unreadable ({type(e).__name__}: {e})"
    need: dict[str, int] = {}
    for info in storage.values():  # each tensor's bytes: (file, offset, length)
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(need.items()):
        f = folder / name
        have = f.stat().st_size if f.exists() else None
        if have is None or have < size:
            return f"shard {name} {'missing' if have is None else f'truncated: {have:,} of {size:,} bytes'}"
    return None


def newest_loadable(root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that why_unreadable() passes, and the newer ones skipped
    with their reasons (for --resume to print)."""
    skipped = []
    for folder in complete_checkpoints(root):
        reason = why_unreadable(folder)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


def load_checkpoint(folder: Path, model, optim) -> tuple[dict, dict]:
    """Load model + optimizer shards in place; return (meta, this rank's state)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = json.loads((folder / "meta.json").read_text())
    if meta["world_size"] != dist.get_world_size():
        raise SystemExit(f"--resume: {folder} was written by {meta['world_size']} ranks, this run has "
                         f"{dist.get_world_size()}; resume with the same --nproc_per_node x --nnodes")
    model_sd, optim_sd = get_state_dict(model, optim)  # the layout to load into
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optim, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rank_state = torch.load(folder / f"rank{dist.get_rank()}.pt", weights_only=False)
    return meta, rank_state


def rng_state() -> dict:
    """This rank's Python, NumPy and torch RNG states (saved per rank, restored on resume)."""
    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(st: dict) -> None:
    """Restore what rng_state() saved."""
    import numpy as np

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
