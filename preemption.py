"""Preemption: on SIGTERM, stop at the next safe point, checkpoint, exit "resume me".

A run of the report's recipe is days of 8-32 GPUs (§8.1). On a shared cluster it is
preempted: SLURM and Kubernetes send SIGTERM, then SIGKILL after a grace period, and
torchrun forwards the SIGTERM it receives to every rank (it signals each rank's process
group: torch/distributed/elastic/multiprocessing/subprocess_handler/subprocess_handler.py:
79-85) and SIGKILLs them `--shutdown-timeout` seconds later (30 by default,
TORCH_ELASTIC_SHUTDOWN_TIMEOUT; torch/distributed/launcher/api.py:145-149). Whatever was
computed since the last checkpoint is lost unless the ranks use that time.

The protocol (train.py follows it; every rule is a line below):

1. `Preemption(grace_s)` installs a SIGTERM handler on each rank. The first SIGTERM marks
   the rank as signalled and starts a grace timer.
2. A step's rollout and grading (train.py phases 1-3) run inside `interruptible()`:
   they hold no collective, so a SIGTERM there raises `Preempted` at once and the
   in-flight rollout is abandoned (it is the only work lost). Everywhere else -- the
   update, the weight sync, a checkpoint -- every rank must finish the same collectives,
   so the signal only marks the rank and the step runs to its end.
3. Once per step, right after grading, every rank all-reduces `signalled` (max): one
   agreement on the marks. Each rank reaches it exactly once per step (done with phases 1-3, or
   interrupted in them), so the collectives match; if any rank was signalled, all stop
   there. No state of the step has changed yet (the data position, the statistics, the
   weights), so what is saved is exactly the last complete step.
4. The trainer writes that checkpoint (atomic, checkpoint.py) and calls `exit()`:
   exit code 75 (EX_TEMPFAIL, sysexits.h: "temporary failure, try again") -- preempted,
   resume me with `--resume`.
5. A second SIGTERM (more than DEBOUNCE_S after the first: SLURM signals every process
   of a job step and torchrun forwards its own copy, so two may arrive together), or
   grace_s passing before step 4 ends, exits 75 at once. Nothing is corrupted: a
   checkpoint being written is a *.tmp folder that --resume ignores; it resumes from
   the newest complete one.

torchrun's own exit code is not the ranks': receiving SIGTERM itself, it re-raises the
signal's exception and exits 1 (torch/distributed/elastic/agent/server/api.py:752-756).
So rank 0 also writes <output-dir>/preempted.json (the step, the checkpoint, the exit
code) for a job script to read.

Imports: nothing of the project (the standard library only). Exports: EXIT_PREEMPTED, Preempted,
Preemption.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "preempted, resume me"
DEBOUNCE_S = 5.0  # signals closer than this to the first are copies of it, not a second one


class Preempted(BaseException):
    """Raised inside `interruptible()` by a SIGTERM. A BaseException, like
    KeyboardInterrupt, so that no library's `except Exception` swallows it."""


class Preemption:
    """One per rank: the SIGTERM handler, the grace timer, the agreement."""

    def __init__(self, grace_s: float, rank: int = 0, signals: tuple = (signal.SIGTERM,)):
        self.grace_s = grace_s
        self.rank = rank
        self.signalled_at: float | None = None  # time.monotonic() of the first SIGTERM
        self._interruptible = False  # True only inside interruptible()
        self._timer: threading.Timer | None = None
        for s in signals:  # signal handlers run in the main thread, between bytecodes
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signalled_at is not None:
            if now - self.signalled_at > DEBOUNCE_S:  # a real second signal: stop waiting
                self._give_up(f"a second {signal.Signals(signum).name}")
            return
        self.signalled_at = now
        if self.rank == 0:
            _say(f"[magic] {signal.Signals(signum).name}: stopping at the next safe point to write a checkpoint "
                 f"(--preempt-grace-s {self.grace_s:g}; torchrun SIGKILLs the ranks --shutdown-timeout seconds after "
                 f"forwarding a SIGTERM, 30 by default)")
        # The grace timer: a daemon thread, so it never keeps a finished process alive.
        self._timer = threading.Timer(self.grace_s, self._give_up, args=(f"--preempt-grace-s {self.grace_s:g} ran out",))
        self._timer.daemon = True
        self._timer.start()
        if self._interruptible:
            raise Preempted()  # unwinds the rollout / grading in progress

    @contextlib.contextmanager
    def interruptible(self, allowed: bool = True):
        """Code with no collective in it, which a SIGTERM may abandon (allowed=False: it
        may not, e.g. vLLM tensor parallelism, whose ranks generate in lockstep). A rank
        already signalled does not start it at all."""
        if self.signalled_at is not None:
            raise Preempted()
        self._interruptible = allowed
        try:
            yield
        finally:
            self._interruptible = False

    @property
    def signalled(self) -> float:
        """1.0 once this rank got a SIGTERM, else 0.0: the value every rank all-reduces
        (max) once per step, at the same point (step 3; train.py uses
        distributed.all_max)."""
        return 0.0 if self.signalled_at is None else 1.0

    def seconds_since_signal(self) -> float:
        return time.monotonic() - self.signalled_at if self.signalled_at is not None else 0.0

    def exit(self, message: str) -> None:
        """Step 4: the checkpoint is on disk (or there was nothing to save). Leaves at
        once with EXIT_PREEMPTED: os._exit, because the rollout engine, the reward pool
        and the process group would otherwise tear down (and could hang) on the way."""
        if self._timer is not None:
            self._timer.cancel()
        if self.rank == 0:
            print(message, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_PREEMPTED)

    def _give_up(self, why: str) -> None:
        """Step 5: no (new) checkpoint; the newest complete one stays loadable."""
        _say(f"[magic] rank {self.rank}: {why}: exiting {EXIT_PREEMPTED} without a new checkpoint "
             f"(--resume continues from the newest complete one)")
        os._exit(EXIT_PREEMPTED)


def _say(line: str) -> None:
    """One line to stderr with a bare write: a signal handler may interrupt a print in
    progress, and a second print into the same buffer would raise ("reentrant call")."""
    os.write(2, (line + "\n").encode())
