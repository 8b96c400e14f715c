"""A local code-execution sandbox for the code reward, Skywork-OR1 report §7.2.

The policy is an optimiser against the reward: whatever the checker lets through,
training finds. So untrusted programs run in a separate, fresh Python process
(`python -I -S`, never a fork of the trainer), with:

* a fresh temporary working directory, removed afterwards;
* resource limits set in the child before exec: address space (memory cap), CPU time,
  file size, open files, and (for non-root users) process count;
* as root, a network namespace of its own (no network), a mount namespace with a small
  private tmpfs over /tmp, /var/tmp and /dev/shm, and an unprivileged uid of its own;
* a wall-clock limit, after which the whole process group -- and, as root, every
  process of the sandbox uid, setsid() escapes included -- is killed: no orphans;
* a cap on captured output, read as it arrives (a fixed size, or one the caller sizes
  from the expected output: a correct large answer fits, a flood is still cut).

`run(script, stdin, cfg, timeout)` is the one entry point: it runs a script and returns
its stdout, a status and the exit code. With `server=` it runs two programs joined by
pipes (an untrusted solution serving calls, a trusted checker holding the tests): the
assertion formats of code_tests.py use it. What a test *is* -- formats, harnesses,
comparisons -- is code_tests.py; this file only isolates.

This file imports the standard library only. Exports: SandboxConfig, run,
capabilities, child_python.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class SandboxConfig:
    """Limits for one untrusted run."""

    timeout_s: float = 6.0
    """Wall-clock limit per test (stdin tests) or per call-based / assertion run."""
    total_timeout_s: float = 60.0
    """Wall-clock limit for all tests of one solution."""
    memory_mb: int = 2048
    """Address-space cap of the child (the report monitors at 50 GB on its cluster)."""
    max_output_bytes: int = 1 << 20
    """Captured stdout beyond this fails the test (a flood is cut here), unless the test's
    expected output is known: then the cap grows with it (expected_output_factor)."""
    expected_output_factor: int = 4
    """code_tests.py: stdin and call tests may print max_output_bytes plus this many bytes
    per byte of their expected output (a correct 5 MiB answer passes; room for another
    formatting of the same numbers)."""
    max_file_mb: int = 16
    """RLIMIT_FSIZE: largest file the child may write."""
    max_open_files: int = 64
    """RLIMIT_NOFILE of the child."""
    max_procs: int = 64
    """RLIMIT_NPROC: processes of the sandbox uid (binds because the child drops root)."""
    tmpfs_mb: int = 64
    """As root: size of the private tmpfs over /tmp, /var/tmp and /dev/shm of the child."""


# Runs in the child interpreter before the untrusted program, then execs it in place.
# (No `preexec_fn`: forking a multithreaded trainer and running Python before exec is
# unsafe; start_new_session is done by the C fork code.) As root it also
#   * enters a new network namespace: only a loopback that is down, so no network;
#   * enters a new mount namespace with a small private tmpfs over /tmp, /var/tmp and
#     /dev/shm: writes outside the work dir go nowhere, and disk use is capped;
#   * drops to an unprivileged uid of its own, so RLIMIT_NPROC binds (a fork bomb stops
#     at max_procs) and everything the program spawns can be found and killed by uid,
#     even after a setsid() escape from the process group.
_LAUNCHER = """
import ctypes, os, resource, sys
mem, cpu, fsize, nofile, nproc, uid, tmpfs_mb = (int(x) for x in sys.argv[1:8])
work, script, python = sys.argv[8], sys.argv[9], sys.argv[10]
if os.getuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare(0x40000000)  # CLONE_NEWNET (failure: no network isolation, see capabilities())
    if libc.unshare(0x00020000) == 0:  # CLONE_NEWNS
        libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)  # MS_REC | MS_PRIVATE: nothing leaks out
        own = (os.path.basename(script), os.path.basename(script)[:-3] + ".in")  # never another program's files
        files = {n: open(os.path.join(work, n), "rb").read() for n in own if os.path.exists(os.path.join(work, n))}
        for d in (b"/tmp", b"/var/tmp", b"/dev/shm"):
            if os.path.isdir(d):
                libc.mount(b"tmpfs", d, b"tmpfs", 0x2 | 0x4, b"size=%dm,mode=1777" % tmpfs_mb)  # nosuid, nodev
        os.makedirs(work, exist_ok=True)  # the work dir again, inside the new /tmp
        for n, data in files.items():
            with open(os.path.join(work, n), "wb") as f:
                f.write(data)
    os.chown(work, uid, uid)
    os.chdir(work)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if os.getuid() != 0:  # as root RLIMIT_NPROC does not bind; here we are not root
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
os.execv(python, [python, "-I", "-S", "-B", script])
"""

_UID_BASE = 40000  # sandbox uids: 40000..59999 (programs), 60000..79999 (assertion solutions)


def _sandbox_uid() -> int:
    """An unprivileged uid for this runner process (distinct across the pool's workers,
    so one program's fork bomb cannot use up another's process quota)."""
    return _UID_BASE + os.getpid() % 20000


def _others_can_run(path: str) -> bool:
    """True if a process of another uid can execute `path` (every directory on the way
    traversable, the file executable by others)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    dirs = [os.sep.join(parts[:i]) or os.sep for i in range(1, len(parts))]
    return all(os.stat(d).st_mode & 0o001 for d in dirs) and bool(os.stat(path).st_mode & 0o001)


def child_python() -> str:
    """The interpreter for untrusted programs. They run with -I -S (standard library
    only), so any CPython 3 works; the trainer's own one is used unless the sandbox uid
    cannot reach it (e.g. pyenv under a 0700 /root), then the system python3."""
    if os.getuid() != 0 or _others_can_run(sys.executable):
        return sys.executable
    # Programs get the standard library only (-I -S): any system CPython 3 serves.
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if os.path.exists(cand) and _others_can_run(cand):
            return cand
    raise RuntimeError(f"sandbox: no Python interpreter that the unprivileged sandbox uid can execute "
                       f"({sys.executable} is not reachable for other users); install python3 in /usr/bin")


def _launch_argv(cfg: SandboxConfig, work: str, script: str, uid: int) -> list[str]:
    """The launcher's command line: the limits as numbers, then where and what to run.
    The launcher is trusted code (ours) in a fresh interpreter; it ends by exec'ing the
    untrusted script, so the limits it set are the program's from its first line."""
    # CPU seconds: the wall-clock limit + 1, so a busy loop dies even if the wall-clock
    # kill were late; memory, file size, open files, processes, uid, tmpfs size.
    limits = [cfg.memory_mb * 2**20, int(cfg.timeout_s) + 1, cfg.max_file_mb * 2**20, cfg.max_open_files,
              cfg.max_procs, uid, cfg.tmpfs_mb]
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, *map(str, limits), work, script, child_python()]


def _uid_pids(uid: int) -> list[int]:
    """The live processes (zombies included) owned by `uid`, from /proc."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                pids.append(int(pid))
        except FileNotFoundError:
            continue
    return pids


# kill(-1, SIGKILL) sent *as the sandbox uid* reaches every process of that uid in one
# atomic sweep of the kernel's task list: a fork bomb cannot outrun it the way it
# outruns a scan of /proc followed by one kill per pid.
_KILLER = "import os, sys\nu = int(sys.argv[1])\nos.setgroups([])\nos.setgid(u)\nos.setuid(u)\nos.kill(-1, 9)"


def _kill_uid(uid: int, wait_s: float = 3.0) -> None:
    """SIGKILL every process owned by `uid` (the sandbox's own uid) and wait until the
    kernel has removed them: this also reaches processes that left the process group
    with setsid(), and leaves no zombies of ours behind."""
    deadline = time.monotonic() + wait_s
    # Sweep until none is left: a fork that raced one sweep is caught by the next.
    while _uid_pids(uid) and time.monotonic() < deadline:
        subprocess.run([sys.executable, "-I", "-S", "-c", _KILLER, str(uid)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
        time.sleep(0.02)  # let init reap the orphans


_CAPS: dict | None = None


def capabilities() -> dict:
    """What isolation this machine gives (probed once by running a tiny program):
    network namespace, private /tmp, unprivileged uid."""
    global _CAPS
    if _CAPS is None:
        # A fresh network namespace has one interface, the loopback (and it is down).
        probe = ("import os, socket\n"
                 "net = 'none' if [n for _, n in socket.if_nameindex()] == ['lo'] else 'open'\n"
                 "print(os.getuid() != 0, net, os.path.ismount('/tmp') and not os.listdir('/tmp')[1:])")
        out, status, _ = run(probe, "", SandboxConfig(), 20.0)
        # root -> the launcher drops to a sandbox uid; each isolation is seen from inside.
        parts = out.split()
        _CAPS = {"root": os.getuid() == 0, "unprivileged_uid": parts[:1] == ["True"],
                 "no_network": parts[1:2] == ["none"], "private_tmp": os.getuid() == 0 and parts[2:3] == ["True"]}
    return _CAPS


# --------------------------------------------------------------------------------------
# One untrusted run
# --------------------------------------------------------------------------------------


def _spawn(work: str, name: str, script: str, stdin: str, cfg: SandboxConfig, uid: int,
           pass_fds: tuple = (), stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start `script` through the launcher, in its own session, with a minimal
    environment (nothing of the trainer's: tokens, paths, CUDA settings)."""
    path = os.path.join(work, f"{name}.py")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(script)
    # stdin from a file, not a pipe: no deadlock with a big input, and a program that
    # reads stdin forever sees end-of-file and runs into the time limit.
    with open(os.path.join(work, f"{name}.in"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(stdin)
    if os.getuid() == 0:  # readable by this program's uid only (the checker's script holds expected values)
        for p in (path, os.path.join(work, f"{name}.in")):
            os.chown(p, uid, uid)
            os.chmod(p, 0o600)
    # A fixed hash seed (reproducible set/dict order) and UTF-8 output; nothing else.
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "HOME": work}
    # start_new_session: the child leads a new process group, so one killpg reaches
    # everything it spawned (and, as root, _kill_uid what escaped it). stderr is
    # discarded (it could flood memory).
    with open(os.path.join(work, f"{name}.in"), "rb") as fin:
        return subprocess.Popen(_launch_argv(cfg, work, path, uid), cwd=work, env=env, start_new_session=True,
                                stdin=fin, stdout=stdout, stderr=subprocess.DEVNULL, close_fds=True,
                                pass_fds=pass_fds)


def _collect(proc: subprocess.Popen, cap: int, timeout: float) -> tuple[str, str, int | None]:
    """Read stdout as it comes, and stop at the first of: end of output, the time limit,
    or `cap` bytes (a flood never reaches the trainer's memory)."""
    chunks, size, status = [], 0, ""
    # select() with a short wait: the loop notices the deadline even when nothing comes.
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        data = os.read(fd, 1 << 16)
        if not data:  # the program (and whatever holds its stdout) closed it
            break
        size += len(data)
        if size > cap:
            status = "output limit"
            break
        chunks.append(data)
    if not status:
        try:  # stdout closed; give the process what is left of the time to exit
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            status = "timeout"
    return b"".join(chunks).decode("utf-8", "replace"), status, proc.poll() if not status else None


def _reap(proc: subprocess.Popen | None, uid: int) -> None:
    """Kill the process, its process group and (as root) every process of its uid."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and everything it spawned
    except (ProcessLookupError, PermissionError):
        pass
    if proc.stdout:
        proc.stdout.close()
    # Reap our own child first: until then it is a zombie that still shows under its uid
    # in /proc, and _kill_uid would wait for it until its deadline (3 s per run).
    proc.wait()
    if os.getuid() == 0:
        _kill_uid(uid)  # and what escaped the group with setsid()


def run(script: str, stdin: str, cfg: SandboxConfig, timeout: float, server: str | None = None,
        max_output: int | None = None) -> tuple[str, str, int | None]:
    """Run `script` in a fresh interpreter in a fresh temp dir. Returns
    (stdout, status, returncode) with status "" (ran), "timeout" or "output limit":
    more than `max_output` bytes of stdout (default cfg.max_output_bytes; code_tests.py
    sizes it from the expected output).

    With `server` (assertion tests): `server` is the untrusted solution, started first
    under a uid of its own, answering calls over two pipes; `script` is the checker
    that holds the test code and the expected values. The solution cannot read the
    checker's memory (another uid, another process) nor write to its stdout."""
    # One fresh directory per run; its files are readable by their own sandbox uid only.
    # Everything a run writes lives here and is removed at the end, whatever happened.
    work = tempfile.mkdtemp(prefix="magic-sandbox-")
    os.chmod(work, 0o755)  # both sandbox uids read their scripts here
    uid = _sandbox_uid()
    proc = srv = None
    fds: list[int] = []
    try:
        pass_fds: tuple = ()
        if server is not None:
            req_r, req_w = os.pipe()  # checker -> solution: call arguments
            resp_r, resp_w = os.pipe()  # solution -> checker: return values
            fds = [req_r, req_w, resp_r, resp_w]
            srv = _spawn(work, "solution", server.replace("__REQ__", str(req_r)).replace("__RESP__", str(resp_w)),
                         "", cfg, uid + 20000, pass_fds=(req_r, resp_w), stdout=subprocess.DEVNULL)
            script = script.replace("__REQ__", str(req_w)).replace("__RESP__", str(resp_r))
            pass_fds = (req_w, resp_r)
        # The main program (or the checker): its stdout is the only output we read.
        proc = _spawn(work, "main", script, stdin, cfg, uid, pass_fds=pass_fds)
        for fd in fds:  # the children hold their ends; EOF reaches a side when the other dies
            os.close(fd)
        fds = []
        return _collect(proc, cfg.max_output_bytes if max_output is None else max_output, timeout)
    finally:
        for fd in fds:
            os.close(fd)
        _reap(proc, uid)
        _reap(srv, uid + 20000)
        shutil.rmtree(work, ignore_errors=True)
