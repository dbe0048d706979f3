"""XLA:CPU settings for training on a few cores; call ``configure_cpu()`` before JAX starts its backend.

XLA reads ``XLA_FLAGS`` once, when the first computation creates the CPU client,
and its worker threads pick their malloc arena when they start, so both must be
set before then (first thing in a CLI's ``main``). What each setting bought is
measured in benchmarks/README.md.

Also here: ``deferred_signals``, which turns SIGINT/SIGTERM into a flag that long-running work (training, a
sweep worker) checks at safe points, raising ``Interrupted`` there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shlex
import signal
import sys
import threading
import warnings

from sqzdse.errors import InputError

# name -> value; appended to XLA_FLAGS unless the user already set that flag.
CPU_FLAGS = {
    # XLA:CPU expands optimization barriers before fusion; keeping them lets sqzdse.model.ops.fence
    # decide what is materialised (without it the pool's scatter loops recompute its winners).
    "xla_disable_hlo_passes": "cse_barrier_expander",
    # The older LLVM loop emitter instead of the MLIR fusion emitters: a SqueezeNet train
    # step compiles ~30% faster (the sweep compiles every configuration), runs as fast.
    "xla_cpu_use_fusion_emitters": "false",
}


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` gives it (what every speed figure records beside it)."""
    import platform
    import subprocess

    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo's first ``flags`` line; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Native bfloat16 matrix instructions: AVX-512 BF16 (Intel Cooper Lake and later, AMD Zen 4/5) or AMX.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_note(flags: set[str] | None = None) -> str | None:
    """Why --dtype bfloat16 will not pay on this CPU, or None where it has native bf16 matrix instructions (or is
    not x86, where XLA's own kernels decide). benchmarks/README.md has the measurements."""
    flags = cpu_flags() if flags is None else flags
    if not flags or ("avx2" not in flags and "avx" not in flags) or any(f in flags for f in BF16_FLAGS):
        return None
    return (f"this CPU ({cpu_model()}) has no native bfloat16 matrix instructions ({' or '.join(BF16_FLAGS)}): "
            "--dtype bfloat16 converts every operand in software and gains little or nothing over float32 here "
            "(benchmarks/README.md)")  # fmt: skip


def _flag_names(flags: str) -> set[str]:
    return {tok.lstrip("-").split("=", 1)[0] for tok in shlex.split(flags) if tok.startswith("--")}


def backend_initialized() -> bool:
    """Whether JAX has already created its backends (XLA_FLAGS changes no longer apply)."""
    if "jax" not in sys.modules:  # not imported, so not started: and asking must not import it (~1.5 s)
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory instead of returning it to the OS; False if not glibc.

    Each XLA:CPU execution allocates its temporaries as one block (339 MB for a
    SqueezeNet training step at batch 128) with posix_memalign from a worker
    thread's arena, which glibc serves with a fresh mmap and unmaps on free: the
    kernel then zero-fills 83,000 pages on every step (~130 ms of system time).
    One arena, no mmap and no trimming keep that block mapped from step to step.
    The cost: the process's RSS stays at its peak.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**30))
    return all(mallopt(param, value) == 1 for param, value in settings)


def visible_gpus() -> list[int]:
    """The NVIDIA GPUs this process may use, without starting JAX: ``$CUDA_VISIBLE_DEVICES`` where set, else what
    ``nvidia-smi -L`` lists; none on a machine without them."""
    import subprocess

    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [int(v) for v in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if v.strip().isdigit()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [i for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def worker_devices(workers: int) -> list[dict]:
    """Each of `workers` sweep workers' environment for its share of the machine: its own cores (``$SQZDSE_CPUS``)
    and, on a machine with GPUs, its own GPUs (``$CUDA_VISIBLE_DEVICES``, split as the cores are). Workers that
    must share a GPU allocate its memory as they need it instead of taking most of it at start."""
    gpus = visible_gpus()
    envs = [{"SQZDSE_CPUS": ",".join(map(str, c))} for c in worker_cpus(workers)]
    if gpus:
        for env, share in zip(envs, worker_cpus(workers, gpus), strict=True):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, share))
            if workers > len(gpus):
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return envs


def worker_cpus(workers: int, cpus: list[int] | None = None) -> list[list[int]]:
    """Split the CPUs this process may use (or the ids given) into `workers` contiguous, disjoint sets (one per
    worker).

    With more workers than CPUs, workers share CPUs round-robin (one CPU each).
    """
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else sorted(cpus)
    if workers >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(workers)]
    size, extra = divmod(len(cpus), workers)
    out, start = [], 0
    for i in range(workers):
        n = size + (i < extra)
        out.append(cpus[start : start + n])
        start += n
    return out


def parse_cpus(text: str) -> list[int]:
    """``"0,1,4-7"`` -> [0, 1, 4, 5, 6, 7] (the format of taskset -c and of $SQZDSE_CPUS)."""
    cpus: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InputError(f"CPU list {text!r}: expected comma-separated CPU numbers or ranges, e.g. 0,1,4-7") from None
    if not cpus:
        raise InputError(f"CPU list {text!r} names no CPU")
    return cpus


def configure_cpu(threads: int | None = None, *, cpus: list[int] | None = None, keep_memory: bool = True) -> str:
    """Append sqzdse's XLA:CPU flags to ``XLA_FLAGS`` (a flag the user set keeps the user's value).

    Args:
      threads: run XLA on this many cores (pins the process to the first `threads` of the
        CPUs it may use; XLA sizes its thread pool from the affinity mask). None: all of them.
      cpus: pin the process to exactly these CPUs instead (a sweep's ``--workers N`` gives
        each worker its own set through ``$SQZDSE_CPUS``).
      keep_memory: see :func:`keep_freed_memory` (glibc only; elsewhere a no-op).
    Returns:
      The resulting XLA_FLAGS.
    """
    if backend_initialized():
        warnings.warn(
            "sqzdse.runtime.configure_cpu: JAX's backend is already initialised, so the XLA flags"
            " do not apply to this process; call configure_cpu() before the first JAX computation",
            RuntimeWarning,
            stacklevel=2,
        )
    current = os.environ.get("XLA_FLAGS", "")
    have = _flag_names(current)
    extra = [f"--{name}={value}" for name, value in CPU_FLAGS.items() if name not in have]
    flags = " ".join([current, *extra]).strip()
    os.environ["XLA_FLAGS"] = flags
    if keep_memory:
        keep_freed_memory()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads}: must be >= 1")
        cpus = sorted(os.sched_getaffinity(0))[:threads]
    if cpus is not None:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as e:
            raise InputError(f"cannot pin to CPUs {cpus}: {e.strerror}") from None
    return flags


# --------------------------------------------------------------------------- signals


def join_processes(coordinator: str | None = None, processes: int | None = None, process_id: int | None = None):
    """Join a training run of several processes (``jax.distributed``: one per host, or per set of devices), before
    any JAX computation. Every process trains on the devices of all of them: each batch is split across them, and
    process 0 alone holds the workdir (``sqzdse.train.loop``). Unset values come from a cluster's environment (SLURM,
    Open MPI) or ``$JAX_COORDINATOR_ADDRESS``; a run that cannot form is one line, not a traceback."""
    import jax

    if processes is not None and processes < 1 or process_id is not None and process_id < 0:
        raise InputError(f"--processes {processes} --process-id {process_id}: processes >= 1, 0 <= id < processes")
    if processes is not None and process_id is not None and process_id >= processes:
        raise InputError(f"--process-id {process_id}: must be below --processes {processes}")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes, process_id=process_id)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot join a run of several processes (coordinator {coordinator or 'unset'}): "
                         f"{first[:200]}") from None  # fmt: skip


SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []  # signals received while deferred, oldest first
_deferring = [0]  # nesting depth of deferred_signals


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the work at a safe point. A BaseException, as KeyboardInterrupt is, so that
    handlers of failed work (``except Exception``) let it through; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.message, self.exit_code = signum, message, 128 + signum


@contextlib.contextmanager
def deferred_signals(when_done: str = "as the work finished"):
    """SIGINT/SIGTERM only set a flag inside the block; ``check_signals`` acts on it between steps.

    Raising KeyboardInterrupt inside JAX's dispatch or while orbax writes can crash the process or leave a
    half-written checkpoint; a flag checked between updates cannot. A second signal ends the process at once
    (exit 128 + signal, one line; the last complete checkpoint stays). A signal that arrived while the block
    finished its work is raised as ``Interrupted`` (saying `when_done`) when the block ends. Nested blocks share
    the outer one's handler; outside the main thread the block does nothing (Python delivers signals to the main
    thread). Also a decorator.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _deferring[0]:
        _deferring[0] += 1
        try:
            yield
        finally:
            _deferring[0] -= 1
        return

    def handler(signum, frame):
        if _pending:  # the second: the user means it
            os.write(2, f"sqzdse: {signal.Signals(signum).name} again: stopping at once\n".encode())
            os._exit(128 + signum)
        _pending.append(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    _deferring[0] += 1
    try:
        yield
        check_signals(when_done)
    finally:
        _deferring[0] -= 1
        for s, h in old.items():
            signal.signal(s, h)
        _pending.clear()


def check_signals(where: str) -> None:
    """Raise ``Interrupted`` if a deferred signal arrived; `where` ends its message ("at update 13 of 30...")."""
    if _pending:
        signum = _pending[0]
        raise Interrupted(signum, f"{signal.Signals(signum).name} {where}")


def signal_pending() -> int:
    """The deferred SIGINT/SIGTERM that waits to be acted on (its number), or 0."""
    return _pending[0] if _pending else 0


def note_signal(signum: int) -> None:
    """Act on `signum` as if it had arrived here: another process of a multi-process run received it, and every
    process stops at the same update."""
    if not _pending:
        _pending.append(signum)
