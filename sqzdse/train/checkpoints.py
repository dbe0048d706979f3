"""A run's workdir: its orbax checkpoints with sha256 checksums, the flock that holds it, and its files.

``run.json`` (the run's configuration, ``claim_workdir``), ``metrics.jsonl`` (one record per epoch,
``append_record`` / ``read_history``) and ``summary.json`` (``write_json``). The last two checkpoints are kept,
each with checksums of its files, so a damaged one falls back to the one before (``restore``). JAX-free at
import (orbax and JAX are imported where used), so reading a run's records never starts JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable

from sqzdse.errors import SqzdseError
from sqzdse.model import config as C
from sqzdse.runtime import check_signals
from sqzdse.train.recipe import TrainConfig, run_identity


class RunFileError(SqzdseError, ValueError):
    """A file of a run's workdir (run.json, metrics.jsonl) cannot be read; the message names it."""


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- workdir lock


class WorkdirBusy(SqzdseError, RuntimeError):
    """Another process holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir: str, on_busy: Callable[[str], None] | None = None):
    """Hold ``workdir/lock`` (``fcntl.flock``, exclusive) for the block: one process per workdir.

    The kernel drops the lock when its holder exits, ``kill -9`` included, so a lock is never stale. It covers
    processes of one machine; across machines only on a shared filesystem whose flock is enforced by the server
    (Linux NFS clients map it to NFS byte-range locks; other network filesystems may not lock at all).
    on_busy: None raises ``WorkdirBusy`` when the workdir is held; otherwise it is called once with the reason,
    and the lock is waited for (a deferred SIGINT/SIGTERM ends the wait).
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "lock")
    with open(path, "a+") as f:
        told = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                msg = f"workdir {workdir!r} is busy: process {holder} is training in it ({path})"
                if on_busy is None:
                    raise WorkdirBusy(f"{msg}; wait for it to finish or use another workdir") from None
                if not told:
                    on_busy(msg)
                    told = True
                check_signals(f"while waiting for {workdir}")
                time.sleep(0.5)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- checkpoints

CHECKPOINTS_KEPT = 2  # a damaged latest checkpoint falls back to the one before
CHECKSUMS = "sqzdse-sha256.json"  # beside orbax's files in each step directory: size and sha256 of every file


class CheckpointDamaged(SqzdseError, RuntimeError):
    """The checkpoint a caller needs cannot be restored intact."""


def _not_our_own_wait(record: logging.LogRecord) -> bool:
    """`save` waits for each checkpoint to finish (its checksums need the files); orbax counts that wait against the
    next save and, past 1 s (a busy machine), logs "Waiting for previous save to complete took ... seconds"."""
    return not record.getMessage().startswith("Waiting for previous save")


def checkpoint_manager(workdir: str, reading: bool = False):
    """The run's checkpoint manager; reading=True saves and deletes nothing (orbax's read_only option would,
    but logs three warnings)."""
    import orbax.checkpoint as ocp

    if not reading:  # a saving run installs the filter (once: addFilter skips a filter it holds); imports do not
        logging.getLogger("absl").addFilter(_not_our_own_wait)
    import jax

    directory, create, kw = os.path.abspath(os.path.join(workdir, "checkpoints")), not reading, {}
    if jax.process_count() > 1:  # a multi-process run: only process 0 writes or reads the workdir, without barriers
        kw["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
        if create:  # orbax leaves the folder to its caller then
            os.makedirs(directory, exist_ok=True)
        create = False
    options = ocp.CheckpointManagerOptions(max_to_keep=None if reading else CHECKPOINTS_KEPT, create=create, **kw)
    return ocp.CheckpointManager(directory, options=options)


def _files(step_dir: str) -> list[str]:
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    return sorted(f for f in out if f != CHECKSUMS)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_checksums(step_dir: str) -> None:
    files = {f: [os.path.getsize(os.path.join(step_dir, f)), _sha256(os.path.join(step_dir, f))]
             for f in _files(step_dir)}  # fmt: skip
    write_json(os.path.join(step_dir, CHECKSUMS), {"files": files})


def _checksum_problem(step_dir: str) -> str | None:
    """What is wrong with a checkpoint's files against its checksums, or None (intact, or written without)."""
    path = os.path.join(step_dir, CHECKSUMS)
    if not os.path.exists(path):
        return None  # written before checksums, or killed between orbax's commit and this file: unverified
    try:
        with open(path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{CHECKSUMS} is unreadable"
    for name, (size, digest) in sorted(files.items()):
        full = os.path.join(step_dir, name)
        if not os.path.exists(full):
            return f"{name} is missing"
        if os.path.getsize(full) != size:
            return f"{name} has {os.path.getsize(full)} bytes, {size} were written"
        if _sha256(full) != digest:
            return f"{name} does not match its sha256 (changed on disk)"
    return None


def restore(manager, state, workdir: str, *, fallback: bool = True):
    """The newest intact checkpoint restored into `state`'s structure (`state` itself when there is none).

    Each checkpoint is checked against its checksums, then read by orbax; a damaged one is reported in one
    line and set aside in ``workdir/damaged-checkpoints/`` (the run resumes from the one before, or from
    scratch). fallback=False (reading a finished run): a damaged latest checkpoint raises CheckpointDamaged.
    """
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    # Read into host arrays, then place them as a fresh state is placed (uncommitted: on the default device).
    # Orbax's own jax.Arrays are committed to a device, and jit lowers a different program for committed
    # arguments: a resumed run would compile every step again, missing the compilation cache.
    host = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), state)
    for step in sorted(manager.all_steps(), reverse=True):
        step_dir = os.path.join(str(manager.directory), str(step))
        problem = _checksum_problem(step_dir)
        if problem is None:
            try:
                restored = manager.restore(step, args=ocp.args.StandardRestore(host))
            except Exception as e:  # orbax/tensorstore raise many kinds for unreadable files
                problem = f"orbax cannot read it ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
            else:
                return jax.device_put(restored)
        older = [s for s in manager.all_steps() if s < step]
        if not fallback:
            redo = f"from step {max(older)}" if older else "from scratch"
            raise CheckpointDamaged(f"checkpoint {step_dir} (step {step}) is damaged: {problem}; run the same "
                                    f"`sqzdse train` again to redo it {redo}")  # fmt: skip
        aside = os.path.join(workdir, "damaged-checkpoints", f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(step_dir, aside)
        manager.reload()
        then = f"resuming from step {max(older)}" if older else "no checkpoint left: starting from scratch"
        log.warning(f"checkpoint step {step} is damaged: {problem}; moved to {aside}; {then}")
    return state


def save(manager, state) -> None:
    """Checkpoint `state` (a ``sqzdse.train.loop.TrainState``) at its update count, then write its checksums."""
    import orbax.checkpoint as ocp

    step = int(state.step)
    if step in manager.all_steps():  # an epoch ending right at a --checkpoint-every step: saved already
        return
    import jax

    if jax.process_count() > 1:  # the replicated arrays span every process's devices: save process 0's copy
        state = jax.device_get(state)
    manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    _write_checksums(os.path.join(str(manager.directory), str(step)))


def write_json(path: str, obj) -> None:
    """Write-then-rename: a reader (or a killed writer) never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- run files


def run_config(workdir: str) -> tuple[str, C.SqueezeNetConfig, TrainConfig]:
    """(the run's directory, cfg, tc) from `workdir`'s ``run.json`` (a DSD run: its ``redense`` phase's); no checkpoint.

    Raises FileNotFoundError when there is no run.
    """
    if not os.path.exists(os.path.join(workdir, "run.json")) and os.path.exists(
        os.path.join(workdir, "redense", "run.json")
    ):
        workdir = os.path.join(workdir, "redense")
    path = os.path.join(workdir, "run.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir}: no training run here (no run.json)")
    try:
        with open(path) as f:
            run = json.load(f)
        return workdir, C.from_dict(run["config"]), TrainConfig(**run["train_config"])
    except (ValueError, KeyError, TypeError) as e:  # not JSON, or not a run record of this version
        raise RunFileError(f"{path}: not a readable run record ({type(e).__name__}: {e})") from None


def finished_summary(workdir: str, step: int) -> dict | None:
    """The summary of the finished run in `workdir` whose last checkpoint (restored: `step`) is intact, or None."""
    try:
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None  # none (or half of one, written by an older version): the run finishes again
    if summary.get("status") == "diverged" or (summary.get("status") == "completed" and summary.get("updates") == step):
        return summary  # a diverged run's checkpoints precede the divergence, which a rerun would repeat
    return None


def claim_workdir(workdir: str, cfg: C.SqueezeNetConfig, tc: TrainConfig) -> None:
    """Record the run's configuration; refuse to resume a different run from the same workdir.

    Runs differing only in RESULT_NEUTRAL fields (checkpoint frequency) are the same run.
    """
    path = os.path.join(workdir, "run.json")
    old = read_identity(workdir)
    if old is None and not os.path.exists(path):
        write_json(path, dict(config=C.to_dict(cfg), train_config=dataclasses.asdict(tc)))
        return
    new = run_identity(cfg, tc)
    if old is None:
        raise C.ConfigError(f"workdir={workdir!r}: {path} is unreadable or from an incompatible version; use a new "
                            "workdir")  # fmt: skip
    if old != new:
        diff = [f"{k}: {old[part].get(k)!r} -> {v!r}" for part in ("config", "train_config")
                for k, v in new[part].items() if old[part].get(k) != v]  # fmt: skip
        raise C.ConfigError(f"workdir={workdir!r} holds a run of a different configuration ({path}: "
                            f"{', '.join(diff)}); use a new workdir")  # fmt: skip


def read_identity(workdir: str) -> dict | None:
    """``run_identity`` of the run recorded in ``workdir/run.json`` (older versions' files too), or None."""
    try:
        with open(os.path.join(workdir, "run.json")) as f:
            run = json.load(f)
        return run_identity(C.from_dict(run["config"]), TrainConfig(**run["train_config"]))
    except (OSError, ValueError, KeyError, TypeError):  # none, unreadable, or fields this version lacks
        return None


def append_record(workdir: str, record: dict) -> None:
    """One epoch's record, a line of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def read_history(workdir: str | None, step: int) -> list[dict]:
    """Epoch records of a resumed run, up to the restored checkpoint (later lines are dropped)."""
    path = os.path.join(workdir, "metrics.jsonl") if workdir else None
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    records = []
    for i, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            int(record["step"])
        except (ValueError, KeyError, TypeError) as e:
            if i < len(lines):  # only the last line can be half-written (by a killed run); others are damage
                raise RunFileError(f"{path}: line {i} is not an epoch record ({type(e).__name__}: {e})") from None
            log.warning(f"{path}: dropped its last line, half-written by an interrupted run")
            continue
        records.append(record)
    damaged = len(records) != len(lines)
    kept = [r for r in records if r["step"] <= step]
    if damaged or len(kept) != len(records):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    return kept
