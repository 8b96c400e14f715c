"""Checkpoints: resumable training state and plain transformers folders, written atomically.

A multi-day run (report §8.1: 660 steps per stage on 32-64 GPUs) will be interrupted;
what matters is that an interruption never costs more than the steps since the last
checkpoint and never leaves a checkpoint that *looks* complete but is not.

* save_checkpoint / load_checkpoint: model + optimizer as torch.distributed.checkpoint
  (DCP) shards (each rank writes its FSDP2 shard; nothing is gathered), plus the
  trainer's own state (step, entropy controller, data order, prompt statistics).
  Written to step_<k>.tmp/, renamed to step_<k>/ when every rank is done; a write that
  fails (a full disk) fails on every rank alike, leaving the older ones intact
  (CheckpointNotWritten). load_checkpoint reshards: N ranks' checkpoint loads on M.
* latest_checkpoint: the newest complete step_<k>/ (ignores *.tmp and folders without
  meta.json); newest_loadable: the newest one whose files are intact (why_unreadable:
  bad meta.json, a missing or corrupt rank file, a missing or truncated shard), for
  `train.py --resume`, which falls back to an older one and says why.
* save_hf: a plain transformers folder (config + safetensors + tokenizer) that
  transformers and vLLM load directly; the stage's final model.

Imports: nothing of the project (torch, torch.distributed.checkpoint). Exports:
save_checkpoint, CheckpointNotWritten, load_checkpoint, latest_checkpoint, complete_checkpoints,
why_unreadable, newest_loadable, save_hf, fsync, seed_everything.
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
    atomically: a temp folder, then rename. Written by rank 0; a failed write raises
    CheckpointNotWritten on every rank (the others would otherwise wait for it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    error = ""
    if dist.get_rank() == 0:
        tmp = folder.with_name(folder.name + ".tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            for f in [*tmp.iterdir(), tmp]:  # on disk before the rename shows it complete
                fsync(f)
            _discard(folder)
            os.replace(tmp, folder)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            error = (f"{folder} not written ({type(e).__name__}: {e}); "
                     f"{shutil.disk_usage(folder.parent).free / 2**20:,.0f} MiB free on {folder.parent}")
    error = next((e for e in _agree(error) if e), "")
    if error:
        raise CheckpointNotWritten(error)


class CheckpointNotWritten(RuntimeError):
    """A checkpoint could not be written (a full disk, a quota, an I/O error). Raised on
    every rank alike; the half-written folder is gone and the older checkpoints are
    untouched, so the run may go on or stop (train.py decides)."""


def _discard(folder: Path) -> None:
    """Delete a folder so that it never shows half-deleted under its own name: renamed to
    *.tmp first (which nothing loads), then removed."""
    if folder.exists():
        gone = folder.with_name(folder.name + ".old.tmp")
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(folder, gone)
        shutil.rmtree(gone, ignore_errors=True)


def _nbytes(sd) -> int:
    """Bytes of the tensors (this rank's shards) in a nested state dict."""
    if isinstance(sd, dict):
        return sum(_nbytes(v) for v in sd.values())
    if isinstance(sd, (list, tuple)):
        return sum(_nbytes(v) for v in sd)
    if isinstance(sd, torch.Tensor):
        local = sd.to_local() if hasattr(sd, "to_local") else sd  # a DTensor: this rank's shard
        return local.numel() * local.element_size()
    return 0


def _agree(error: str) -> list[str]:
    """Every rank's error text ('' for none), on every rank: one verdict for all."""
    errors = [""] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return errors


def save_checkpoint(root: Path, done: int, model, optim, meta: dict, rank_state: dict, keep: int) -> Path:
    """A resumable checkpoint after `done` steps of this stage: <root>/step_<done>/.

    * model + optimizer: torch.distributed.checkpoint (DCP) shards, each rank writing its
      own FSDP2 shard in parallel; nothing is gathered onto one rank.
    * meta.json (rank 0): step, entropy controller, data order, config.
    * rank<r>.pt: what each rank keeps of its own (its prompt statistics).

    Atomic: everything goes to step_<done>.tmp/, every rank fsyncs what it wrote,
    and only then rank 0 renames the folder. A crash at any moment leaves
    either the old set of complete checkpoints or the new one, never a half-written
    folder under a complete-looking name (load_checkpoint ignores *.tmp).

    A write that fails on any rank (ENOSPC, EDQUOT, EIO) fails on every rank alike: the
    .tmp folder is removed (its space given back), the older checkpoints stay as they
    were, and CheckpointNotWritten names the folder, the error, the space the checkpoint
    needs and the space free."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank = dist.get_rank()
    final, tmp = root / f"step_{done:08d}", root / f"step_{done:08d}.tmp"
    error = ""
    if rank == 0:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    if any(_agree(error)):
        raise CheckpointNotWritten(f"checkpoint {final} not written: {error or 'rank 0 could not create it'}")
    model_sd, optim_sd = get_state_dict(model, optim)  # sharded (DTensor) state dicts
    need = torch.tensor([float(_nbytes(model_sd) + _nbytes(optim_sd))], dtype=torch.float64)
    dist.all_reduce(need)  # every rank's shards: the checkpoint's size
    try:
        # DCP fsyncs every shard file it writes (FileSystemWriter(sync_files=True), torch
        # distributed/checkpoint/filesystem.py:470-472) and its .metadata (:775-777). A
        # failed write on any rank makes dcp.save raise on every rank (its write step
        # gathers each rank's result: _DistWrapper.all_reduce, torch/distributed/checkpoint/
        # utils.py:224-264, called for "write" at state_dict_saver.py:513).
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        # Each rank then forces what DCP does not to disk: its own rank file and the
        # folder's entries -- on its own node, so several nodes need no rank-0
        # `os.sync()` (which flushes the whole machine's dirty pages and none of the
        # other nodes').
        torch.save(rank_state, tmp / f"rank{rank}.pt")
        fsync(tmp / f"rank{rank}.pt")
        fsync(tmp)
        if rank == 0:
            (tmp / "meta.json").write_text(json.dumps(meta))
            fsync(tmp / "meta.json")
            fsync(tmp)
    except CheckpointException as e:  # a BaseException: the first failing rank's own error
        rank_failed, (exc, _) = next(iter(e.failures.items()))
        error = f"{type(exc).__name__} on rank {rank_failed}: {exc}"
    except Exception as e:  # noqa: BLE001 -- an OSError of our own writes
        error = f"{type(e).__name__}: {e}"
    errors = _agree(error)  # also the barrier: every rank's files are on disk
    if any(errors):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back; nothing loads *.tmp anyway
        dist.barrier()  # the space is free again before anyone measures it
        free = shutil.disk_usage(root).free
        # A full disk does not always say ENOSPC: a write that fails inside torch.save's zip
        # writer surfaces as "RuntimeError: [enforce fail at inline_container.cc] unexpected
        # pos"; the space the checkpoint needs against the space free says it plainly.
        why = "the disk is full" if free < need.item() else "a write failed"
        first = next(e for e in errors if e)
        raise CheckpointNotWritten(
            f"checkpoint {final} not written: {why}: it needs about {need.item() / 2**20:,.0f} MiB, "
            f"{free / 2**20:,.0f} MiB are free on {root} ({first.splitlines()[0][:300]}). "
            f"The checkpoints before it are intact: {[p.name for p in complete_checkpoints(root)]}")
    if rank == 0:
        _discard(final)  # a re-run of this step after a fallback: the old folder goes first
        os.replace(tmp, final)  # only now does the checkpoint look complete
        fsync(root)  # the rename itself survives a power cut
        for old in complete_checkpoints(root)[keep or len(complete_checkpoints(root)):]:
            _discard(old)  # the oldest beyond `keep`
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


def load_checkpoint(folder: Path, model, optim) -> tuple[dict, list[dict]]:
    """Load model + optimizer shards in place; return (meta, the writers' rank states).

    The checkpoint may come from another number of ranks (a lost node, a bigger
    allocation): DCP reads each rank's new shard from whichever saved shards overlap it
    (resharding). The per-rank states (prompt statistics: sums per prompt) of every
    writer are returned on rank 0 for the caller to merge, and none on the others."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = json.loads((folder / "meta.json").read_text())
    model_sd, optim_sd = get_state_dict(model, optim)  # this run's layout to load into
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optim, model_state_dict=state["model"], optim_state_dict=state["optim"])
    writers = range(int(meta["world_size"])) if dist.get_rank() == 0 else ()
    return meta, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in writers]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs. The trainer reseeds them at the
    start of every rollout batch from (seed, stage, batch): the same on every rank, so no
    RNG state depends on the rank or the number of ranks, and a resumed run -- on any
    number of ranks -- needs none saved."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
