"""Training and evaluation: pure, jitted steps and one ``train_and_evaluate`` loop.

Everything configuration-dependent is bound before ``jax.jit``; the learning rate,
momentum and weight decay travel as arrays in the train state, so a new value
does not recompile. A run in ``workdir`` checkpoints with orbax and, started
again with the same arguments, resumes where it stopped and ends with the same
result as an uninterrupted run; started on a finished run, it returns that run's
summary. One process at a time holds a workdir (``workdir_lock``); the last two
checkpoints are kept, each with sha256 checksums of its files, so a damaged one
falls back to the one before (``_restore``); SIGINT/SIGTERM stop a run at the
next update with a checkpoint (``sqzdse.runtime.deferred_signals``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from sqzdse import __version__
from sqzdse import config as C
from sqzdse.cost import summary as cost_summary
from sqzdse.errors import SqzdseError
from sqzdse.model import SqueezeNet
from sqzdse.recipe import TrainConfig, run_identity
from sqzdse.runtime import check_signals, deferred_signals, signal_pending

# --------------------------------------------------------------------------- state and steps


@struct.dataclass
class TrainState:
    step: jax.Array  # optimizer updates done
    params: Any  # nnx.State of the model's parameters
    opt_state: Any
    rng: jax.Array  # dropout keys fold in the update count
    hparams: dict  # the schedule's lr, warmup_steps, total_steps, power: arrays, not compile-time constants


def _optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    def caffe_sgd(learning_rate, momentum, weight_decay):
        # Caffe's SGDSolver: v = momentum * v + lr * (grad + wd * w); w -= v (lr inside the velocity).
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_learning_rate(learning_rate),
            optax.trace(decay=momentum),
        )

    def adam(learning_rate, momentum, weight_decay):
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=momentum))

    def adamw(learning_rate, momentum, weight_decay):
        return optax.adamw(learning_rate, b1=momentum, weight_decay=weight_decay)

    factory = {"sgd": caffe_sgd, "adam": adam, "adamw": adamw}[tc.optimizer]
    return optax.inject_hyperparams(factory)(learning_rate=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)


def learning_rate(step, hp: dict, schedule: str):
    """Learning rate at update `step` (traceable: `hp` holds arrays)."""
    step = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((step - hp["warmup_steps"]) / jnp.maximum(hp["total_steps"] - hp["warmup_steps"], 1), 0, 1)
    decay = {
        "poly": lambda: (1 - progress) ** hp["power"],
        "cosine": lambda: 0.5 * (1 + jnp.cos(jnp.pi * progress)),
        "constant": lambda: jnp.ones_like(progress),
    }[schedule]()
    warm = jnp.where(hp["warmup_steps"] > 0, jnp.minimum((step + 1) / jnp.maximum(hp["warmup_steps"], 1), 1), 1)
    return hp["lr"] * decay * warm


def apply_mask(params, mask):
    """Zero the parameters where `mask` (a tree of booleans shaped like `params`) is False; None keeps all."""
    if mask is None:
        return params
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def _init_fn(cfg: C.SqueezeNetConfig, init: str, dtype):
    return lambda key: nnx.split(SqueezeNet(cfg, init=init, dtype=dtype, rngs=nnx.Rngs(key)), nnx.Param)


def initial_params(cfg: C.SqueezeNetConfig, seed: int = 0, *, init: str = "caffe", dtype=None):
    """(graphdef, params) of the model seeded with `seed` (init: a ``sqzdse.model.INITS`` scheme), in one compiled call.

    One compiled initialisation instead of ~50 eagerly compiled initializer calls: ~2 s instead of
    ~14 s per run here, at LLVM -O0 (the threefry code compiles slowly and runs once). The same random
    bits: the Xavier (uniform) parameters equal the eager ones bit for bit, the Gaussian (erfinv) within an ulp.
    """
    fn = _init_fn(cfg, init, dtype)
    key = jax.random.key(seed)  # what nnx.Rngs(seed) would make
    graphdef, _ = nnx.eval_shape(fn, key)
    return graphdef, jax.jit(lambda k: fn(k)[1], compiler_options={"xla_backend_optimization_level": 0})(key)


def create_train_state(
    cfg: C.SqueezeNetConfig, tc: TrainConfig, total_steps: int, steps_per_epoch: int, *, init_params=None, mask=None
):
    """Initialise the model (seeded) and the optimizer; returns (graphdef, state).

    init_params: start from these parameters (e.g. a trained run's) instead of the seeded initialisation.
    mask: pruning mask (see ``apply_mask``) applied to the initial parameters.
    """
    dtype = jnp.bfloat16 if tc.dtype == "bfloat16" else None
    if init_params is None:
        graphdef, params = initial_params(cfg, tc.seed, init=tc.init, dtype=dtype)
    else:  # checked against the abstract model: no seeded initialisation to throw away
        graphdef, abstract = nnx.eval_shape(_init_fn(cfg, tc.init, dtype), jax.random.key(tc.seed))
        shapes = lambda t: [np.shape(x) for x in jax.tree.leaves(t)]
        if jax.tree.structure(init_params) != jax.tree.structure(abstract) or shapes(init_params) != shapes(abstract):
            raise C.ConfigError("init_params: the parameters do not match the model of this configuration")
        params = jax.tree.map(lambda x, a: jnp.array(x, a.dtype), init_params, abstract)  # a copy: steps donate it
    params = apply_mask(params, mask)
    tx = _optimizer(tc)
    hparams = dict(
        lr=jnp.float32(tc.lr),
        warmup_steps=jnp.float32(round(tc.warmup_epochs * steps_per_epoch)),
        total_steps=jnp.float32(total_steps),
        power=jnp.float32(tc.power),
    )
    rng = jax.random.key_data(jax.random.key(tc.seed))
    state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=rng, hparams=hparams)
    return graphdef, state


def _metrics(logits, labels) -> dict:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return dict(
        loss=loss,
        top1=(jnp.argmax(logits, -1) == labels).astype(jnp.float32),
        top5=jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32),
    )


def make_train_step(graphdef, tc: TrainConfig, mask=None) -> Callable:
    """``train_step(state, images, labels) -> (state, metrics)``.

    images: (iter_size, batch_size, H, W, C). The gradients of the micro-batches
    are averaged (Caffe's iter_size) before one update, so any batch_size x
    iter_size with the same product gives the same update. Jitted pure functions
    do the work: one computes a micro-batch's gradient, one sums them (iter_size > 1),
    one applies the update. (A ``lax.scan`` over micro-batches would be one function, but
    XLA's CPU backend runs convolutions inside a loop ~20x slower.) Dropout keys
    derive from the seed, the update count and the micro-batch, so a resumed run
    draws the same masks.

    mask: a pruning mask (``apply_mask``) re-applied after every update, so pruned weights stay exactly 0
    whatever the optimizer's momentum or weight decay would do to them.
    """
    tx = _optimizer(tc)

    def loss_fn(params, x, y, key):
        logits = nnx.merge(graphdef, params)(x, train=True, dropout_rng=key)
        m = _metrics(logits, y)
        return m["loss"].mean(), jax.tree.map(jnp.mean, m)

    @jax.jit
    def gradient(state: TrainState, x, y, i):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step), i)
        return jax.grad(loss_fn, has_aux=True)(state.params, x, y, key)

    # Summing micro-batch gradients is its own small jit: with the sum inside `gradient`, every
    # parameter's add would be one more kernel to compile, also when iter_size is 1.
    add = jax.jit(lambda acc, grads: jax.tree.map(jnp.add, acc, grads), donate_argnums=0)

    # The update is elementwise over ~50 small arrays: LLVM -O1 compiles it in half the time of the
    # default -O2 and runs it as fast (benchmarks/README.md).
    @functools.partial(jax.jit, donate_argnums=0, compiler_options={"xla_backend_optimization_level": 1})
    def apply(state: TrainState, acc, mask):
        grads = jax.tree.map(lambda g: g / tc.iter_size, acc)
        lr = learning_rate(state.step, state.hparams, tc.schedule)
        opt_state = state.opt_state._replace(hyperparams={**state.opt_state.hyperparams, "learning_rate": lr})
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = apply_mask(optax.apply_updates(state.params, updates), mask)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), lr

    def train_step(state: TrainState, images, labels):
        acc, metrics = None, []
        for i in range(images.shape[0]):
            grads, m = gradient(state, images[i], labels[i], i)
            acc = grads if acc is None else add(acc, grads)
            metrics.append(m)
        state, lr = apply(state, acc, mask)
        return state, {**jax.tree.map(lambda *v: sum(v) / len(v), *metrics), "lr": lr}

    return train_step


@contextlib.contextmanager
def compile_timer():
    """Seconds JAX spends tracing, lowering and compiling inside the block (``with compile_timer() as t: ... t[0]``)."""
    total = [0.0]

    def listener(event: str, seconds: float, **_):
        if event.startswith("/jax/core/compile/"):
            total[0] += seconds

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def make_eval_step(graphdef) -> Callable:
    """``eval_step(params, images, labels, mask) -> summed metrics``, jitted; mask drops padding."""

    def eval_step(params, images, labels, mask):
        logits = nnx.merge(graphdef, params)(images)
        m = _metrics(logits, labels)
        return {k: jnp.sum(v * mask) for k, v in m.items()} | {"count": jnp.sum(mask)}

    return jax.jit(eval_step)


def evaluate(eval_step, params, batches, batch_size: int) -> dict:
    """Mean loss / top-1 / top-5 over an iterator of (images, labels); the last batch is padded."""
    totals = None
    for x, y in batches:
        n = len(y)
        mask = np.zeros(batch_size, np.float32)
        mask[:n] = 1
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - n, y.dtype)])
        out = eval_step(params, x, y, mask)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        return {}
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}


# --------------------------------------------------------------------------- the run


class Diverged(SqzdseError, RuntimeError):
    """The training loss became NaN or infinite."""


class RunFileError(SqzdseError, ValueError):
    """A file of a run's workdir (run.json, metrics.jsonl) cannot be read; the message names it."""


def _say(msg: str) -> None:
    print(f"sqzdse: {msg}", file=sys.stderr, flush=True)


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


def _checkpointer(workdir: str, reading: bool = False):
    """The run's checkpoint manager; reading=True saves and deletes nothing (orbax's read_only option would,
    but logs three warnings)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=None if reading else CHECKPOINTS_KEPT, create=not reading)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


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
    _write_json(os.path.join(step_dir, CHECKSUMS), {"files": files})


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


def _restore(manager, state: TrainState, workdir: str, *, fallback: bool = True) -> TrainState:
    """The newest intact checkpoint restored into `state`'s structure (`state` itself when there is none).

    Each checkpoint is checked against its checksums, then read by orbax; a damaged one is reported in one
    line and set aside in ``workdir/damaged-checkpoints/`` (the run resumes from the one before, or from
    scratch). fallback=False (reading a finished run): a damaged latest checkpoint raises CheckpointDamaged.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    for step in sorted(manager.all_steps(), reverse=True):
        step_dir = os.path.join(str(manager.directory), str(step))
        problem = _checksum_problem(step_dir)
        if problem is None:
            try:
                return manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # orbax/tensorstore raise many kinds for unreadable files
                problem = f"orbax cannot read it ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
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
        _say(f"checkpoint step {step} is damaged: {problem}; moved to {aside}; {then}")
    return state


def _save(manager, state: TrainState) -> None:
    import orbax.checkpoint as ocp

    step = int(state.step)
    if step in manager.all_steps():  # an epoch ending right at a --checkpoint-every step: saved already
        return
    manager.save(step, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    _write_checksums(os.path.join(str(manager.directory), str(step)))


def _write_json(path: str, obj) -> None:
    """Write-then-rename: a reader (or a killed writer) never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


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


def load_run(workdir: str) -> tuple[C.SqueezeNetConfig, TrainConfig, Any, Any]:
    """(cfg, tc, graphdef, params) of the run in `workdir`, at its latest checkpoint.

    A DSD run's top directory (``sqzdse train --dsd``) holds no run of its own: its last phase, ``redense``, is
    loaded. Raises FileNotFoundError when there is no run or no checkpoint.
    """
    workdir, cfg, tc = run_config(workdir)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir}: the run has no checkpoint yet")
    manager = _checkpointer(workdir, reading=True)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{workdir}: the run has no checkpoint yet")
    graphdef, state = create_train_state(cfg, tc, 1, 1)
    return cfg, tc, graphdef, _restore(manager, state, workdir, fallback=False).params


def train_and_evaluate(
    cfg: C.SqueezeNetConfig,
    tc: TrainConfig,
    workdir: str | None = None,
    *,
    dataset=None,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
    init_params=None,
    mask=None,
    on_busy: Callable[[str], None] | None = None,
    origin: dict | None = None,
) -> dict:
    """Train `cfg` under `tc`; returns the run summary (also written to ``workdir/summary.json``).

    dataset: a ``sqzdse.data.Dataset`` (default: ``data.load(tc.dataset)``).
    on_epoch: called with each epoch's record (a sweep reports to Optuna and may raise to prune).
    init_params, mask: start from these parameters / hold this pruning mask (``create_train_state``,
    ``make_train_step``); a resumed run takes its parameters from the checkpoint, the mask from the caller.
    on_busy: another process trains in `workdir`: None raises WorkdirBusy, a callable is told and the lock
    waited for (``workdir_lock``). origin: who asked for the run (a sweep's study and trial), kept in the summary.
    The summary's ``status`` is "completed" or "diverged" (a NaN/inf loss stops the run, recorded). A workdir
    that holds this run finished is not trained again: its summary comes back as written, with ``reused``.
    SIGINT/SIGTERM stop the run at the next update: it checkpoints (with a workdir) and raises Interrupted.
    """
    lock = workdir_lock(workdir, on_busy) if workdir else contextlib.nullcontext()
    with deferred_signals(), lock:
        return _train_and_evaluate(cfg, tc, workdir, dataset, on_epoch, progress, init_params, mask, origin)


def _train_and_evaluate(cfg, tc, workdir, dataset, on_epoch, progress, init_params, mask, origin) -> dict:
    from sqzdse import data as D

    t_start = time.perf_counter()
    ds = dataset if dataset is not None else D.load(tc.dataset, val_size=tc.val_size)
    if tuple(cfg.input_shape) != tuple(ds.info.image_shape) or cfg.num_classes != ds.info.num_classes:
        raise C.ConfigError(
            f"input_shape={cfg.input_shape}, num_classes={cfg.num_classes}: the dataset {ds.info.name} has"
            f" images {ds.info.image_shape} and {ds.info.num_classes} classes"
        )
    micro = tc.batch_size
    per_update = micro * tc.iter_size
    updates_per_epoch = ds.steps_per_epoch("train", per_update, limit=tc.train_limit)
    if updates_per_epoch < 1:
        raise C.ConfigError(f"batch_size x iter_size = {per_update}: larger than the training split")
    total_updates = max(1, math.ceil(tc.epochs * updates_per_epoch))
    n_epochs = math.ceil(total_updates / updates_per_epoch)

    graphdef, state = create_train_state(cfg, tc, total_updates, updates_per_epoch, init_params=init_params, mask=mask)
    manager = None
    if workdir:
        _claim_workdir(workdir, cfg, tc)
        manager = _checkpointer(workdir)
        state = _restore(manager, state, workdir)
        finished = _finished_summary(workdir, int(state.step))
        if finished is not None:
            return {**finished, "reused": True, "state": (graphdef, state)}
    train_step = make_train_step(graphdef, tc, mask)
    eval_step = make_eval_step(graphdef)
    start = int(state.step)
    history = _read_history(workdir, start)

    status, reason, test = "completed", None, {}
    with compile_timer() as compiled, _progress(total_updates, start, progress) as bar:
        try:
            for epoch in range(start // updates_per_epoch, n_epochs):
                first = epoch * updates_per_epoch
                steps = min(updates_per_epoch, total_updates - first)
                if int(state.step) >= first + steps and len(history) > epoch:
                    continue  # trained and recorded (a finished fractional epoch whose summary.json was lost)
                epoch_batches = ds.batches("train", per_update, seed=tc.seed, epoch=epoch, train=True,
                                           limit=tc.train_limit)  # fmt: skip
                t_epoch, seen, sums = time.perf_counter(), 0, None
                try:
                    for x, y in itertools.islice(epoch_batches, int(state.step) - first, steps):  # resume mid-epoch
                        x = x.reshape(tc.iter_size, micro, *x.shape[1:])
                        y = y.reshape(tc.iter_size, micro)
                        state, m = train_step(state, x, y)
                        loss = float(m["loss"])  # a host sync per update; an update is >= 100 ms of work here
                        if not math.isfinite(loss):
                            raise Diverged(f"training loss became {loss} at update {int(state.step)}")
                        sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
                        seen += 1
                        if bar is not None:
                            rate = seen * per_update / (time.perf_counter() - t_epoch)
                            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{float(m['top1']):.3f}",
                                            img_s=f"{rate:.0f}")  # fmt: skip
                            bar.update(1)
                        if manager is not None and tc.checkpoint_every and int(state.step) % tc.checkpoint_every == 0:
                            _save(manager, state)
                        if signal_pending():
                            _stop(manager, state, total_updates)
                finally:  # stop the prefetching thread now, not at interpreter exit
                    getattr(epoch_batches, "close", lambda: None)()
                epoch_s = time.perf_counter() - t_epoch
                train_m = {k: float(v) / max(seen, 1) for k, v in jax.device_get(sums or {}).items()}
                val = evaluate(eval_step, state.params, ds.batches("val", micro, seed=0, train=False,
                                                                   limit=tc.eval_limit), micro)  # fmt: skip
                record = dict(
                    epoch=epoch + 1, step=int(state.step), lr=train_m.pop("lr", None),
                    train_loss=train_m.get("loss"), train_top1=train_m.get("top1"),
                    val_loss=val.get("loss"), val_top1=val.get("top1"), val_top5=val.get("top5"),
                    seconds=epoch_s, images_per_s=seen * per_update / epoch_s if epoch_s else None,
                )  # fmt: skip
                if manager is not None:
                    _save(manager, state)
                    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
                        f.write(json.dumps(record) + "\n")
                history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
        except Diverged as e:
            status, reason = "diverged", str(e)
        if status == "completed":
            test = evaluate(eval_step, state.params, ds.batches("test", micro, seed=0, train=False,
                                                                limit=tc.eval_limit), micro)  # fmt: skip
    cost = cost_summary(cfg)
    last = history[-1] if history else {}
    result = dict(
        status=status,
        reason=reason,
        val_top1=last.get("val_top1") if status == "completed" else None,
        val_top5=last.get("val_top5") if status == "completed" else None,
        test_top1=test.get("top1"),
        test_top5=test.get("top5"),
        test_loss=test.get("loss"),
        params=cost["params"],
        bytes=cost["bytes"],
        macs=cost["macs"],
        epochs=tc.epochs,
        updates=int(state.step),
        train_seconds=sum(h["seconds"] for h in history),  # every epoch's, also those of an earlier session
        compile_seconds=compiled[0],  # this session's
        wall_seconds=time.perf_counter() - t_start,  # this session's
        resumed_at=start,  # the update this session's training started at (0: from scratch)
        history=history,
        config=C.to_dict(cfg),
        train_config=dataclasses.asdict(tc),
        version=__version__,
        origin=origin,
    )
    if workdir:
        _write_json(os.path.join(workdir, "summary.json"), result)
    result["state"] = (graphdef, state)
    return result


def _stop(manager, state: TrainState, total: int) -> None:
    """A deferred signal arrived: checkpoint (with a workdir) and raise Interrupted."""
    step = int(state.step)
    if manager is None:
        check_signals(f"at update {step} of {total}: no workdir, nothing saved")
    _save(manager, state)
    check_signals(f"at update {step} of {total}: checkpoint saved in {manager.directory}; a rerun resumes from it")


def _finished_summary(workdir: str, step: int) -> dict | None:
    """The summary of the finished run in `workdir` whose last checkpoint (restored: `step`) is intact, or None."""
    try:
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None  # none (or half of one, written by an older version): the run finishes again
    if summary.get("status") == "diverged" or (summary.get("status") == "completed" and summary.get("updates") == step):
        return summary  # a diverged run's checkpoints precede the divergence, which a rerun would repeat
    return None


def _claim_workdir(workdir: str, cfg: C.SqueezeNetConfig, tc: TrainConfig) -> None:
    """Record the run's configuration; refuse to resume a different run from the same workdir.

    Runs differing only in RESULT_NEUTRAL fields (checkpoint frequency) are the same run.
    """
    path = os.path.join(workdir, "run.json")
    old = read_identity(workdir)
    if old is None and not os.path.exists(path):
        _write_json(path, dict(config=C.to_dict(cfg), train_config=dataclasses.asdict(tc)))
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


def _read_history(workdir: str | None, step: int) -> list[dict]:
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
            _say(f"{path}: dropped its last line, half-written by an interrupted run")
            continue
        records.append(record)
    damaged = len(records) != len(lines)
    kept = [r for r in records if r["step"] <= step]
    if damaged or len(kept) != len(records):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    return kept


def _progress(total: int, done: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="update", dynamic_ncols=True, leave=True)
