"""Training and evaluation: pure, jitted steps and one ``train_and_evaluate`` loop.

Everything configuration-dependent is bound before ``jax.jit``; the learning rate,
momentum and weight decay travel as arrays in the train state, so a new value
does not recompile. A run in ``workdir`` checkpoints with orbax (``sqzdse.train.checkpoints``)
and, started again with the same arguments, resumes where it stopped and ends with the
same result as an uninterrupted run; started on a finished run, it returns that run's
summary. One process at a time holds a workdir (``workdir_lock``); a damaged checkpoint
falls back to the one before; SIGINT/SIGTERM stop a run at the next update with a
checkpoint (``sqzdse.runtime.deferred_signals``). ``train_epoch`` is the one inner loop:
centroid fine-tuning (``sqzdse.compress.pipeline``) runs it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from sqzdse import __version__
from sqzdse.errors import SqzdseError
from sqzdse.model import config as C
from sqzdse.model.cost import summary as cost_summary
from sqzdse.model.network import initial_params, initialiser
from sqzdse.runtime import check_signals, deferred_signals, note_signal, signal_pending
from sqzdse.train import checkpoints as ckpt
from sqzdse.train.progress import Progress
from sqzdse.train.recipe import TrainConfig, update_counts

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


@functools.cache
def _warn_bf16() -> None:
    """Once per process: bfloat16 on a CPU without native bf16 matrix instructions (``runtime.bf16_note``)."""
    from sqzdse.runtime import bf16_note

    note = bf16_note() if jax.default_backend() == "cpu" else None
    if note:
        logging.getLogger(__name__).warning(note)


def create_train_state(
    cfg: C.SqueezeNetConfig, tc: TrainConfig, total_steps: int, steps_per_epoch: int, *, init_params=None, mask=None
):
    """Initialise the model (seeded) and the optimizer; returns (graphdef, state).

    init_params: start from these parameters (e.g. a trained run's) instead of the seeded initialisation.
    mask: pruning mask (see ``apply_mask``) applied to the initial parameters.
    """
    dtype = jnp.bfloat16 if tc.dtype == "bfloat16" else None
    if dtype is not None:
        _warn_bf16()
    _, (graphdef, abstract) = initialiser(cfg, tc.init, dtype)
    dtypes = tuple(a.dtype for a in jax.tree.leaves(abstract))
    if init_params is None:
        params = initial_params(cfg, tc.seed, init=tc.init, dtype=dtype)[1]
        if mask is not None:
            params = _start(params, mask, dtypes)
    else:  # checked against the abstract model: no seeded initialisation to throw away
        shapes = lambda t: [np.shape(x) for x in jax.tree.leaves(t)]
        if jax.tree.structure(init_params) != jax.tree.structure(abstract) or shapes(init_params) != shapes(abstract):
            raise C.ConfigError("init_params: the parameters do not match the model of this configuration")
        params = _start(init_params, mask, dtypes)
    return graphdef, init_train_state(tc, params, total_steps, steps_per_epoch)


@functools.partial(jax.jit, static_argnums=2)
def _start(params, mask, dtypes: tuple):
    """A copy of `params` (the steps donate theirs) in `dtypes` (one per leaf), masked (``apply_mask``): one
    compiled call, not an eager operation per parameter."""
    leaves, treedef = jax.tree.flatten(params)
    return apply_mask(jax.tree.unflatten(treedef, [jnp.array(x, d) for x, d in zip(leaves, dtypes, strict=True)]), mask)


def init_train_state(tc: TrainConfig, params, total_steps: int, steps_per_epoch: int) -> TrainState:
    """The optimizer's state, the schedule and the dropout key of `tc` around `params` (any tree of arrays)."""
    hparams = dict(
        lr=jnp.float32(tc.lr),
        warmup_steps=jnp.float32(round(tc.warmup_epochs * steps_per_epoch)),
        total_steps=jnp.float32(total_steps),
        power=jnp.float32(tc.power),
    )
    rng = jax.random.key_data(jax.random.key(tc.seed))
    numbers = dict(learning_rate=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    opt_state = _optimizer_init(tc.optimizer)(params, {k: jnp.float32(v) for k, v in numbers.items()})
    return TrainState(step=jnp.int32(0), params=params, opt_state=opt_state, rng=rng, hparams=hparams)


@functools.cache
def _transform(optimizer: str) -> optax.GradientTransformation:
    """The optimizer whose numbers (lr, momentum, weight decay) its state carries (``init_train_state``): one for
    every run with this optimizer, however those numbers are set."""
    return _optimizer(TrainConfig(optimizer=optimizer))


@functools.cache
def _optimizer_init(optimizer: str) -> Callable:
    """``init(params, numbers) -> the optimizer's state`` with `numbers` (lr, momentum, weight decay) in it, jitted:
    one compiled call, not an eager zeros for every parameter and slot."""
    tx = _transform(optimizer)

    def init(params, numbers):
        state = tx.init(params)
        return state._replace(hyperparams={**state.hyperparams, **numbers})

    return jax.jit(init)


def _metrics(logits, labels) -> dict:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return dict(
        loss=loss,
        top1=(jnp.argmax(logits, -1) == labels).astype(jnp.float32),
        top5=jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32),
    )


# Jitted functions are made once per process for what shapes their code (an lru_cache, so that jit hashes the
# network's graphdef once, not at every call): another run of the same network in this process (another seed, a
# resumed run, the next phase) reuses the compiled code without tracing again. The gradient sees only the
# parameters, the dropout key and the update count, so it compiles once for every optimizer and schedule.


@functools.lru_cache(maxsize=16)
def _gradient_fn(graphdef, to_params: Callable | None) -> Callable:
    """``gradient(params, rng, step, const, x, y, i) -> (grads, mean metrics)`` of a micro-batch's mean loss."""

    def loss_fn(params, const, x, y, key):
        model_params = params if to_params is None else to_params(params, const)
        m = _metrics(nnx.merge(graphdef, model_params)(x, train=True, dropout_rng=key), y)
        return m["loss"].mean(), jax.tree.map(jnp.mean, m)

    @jax.jit
    def gradient(params, rng, step, const, x, y, i):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(rng), step), i)
        return jax.grad(loss_fn, has_aux=True)(params, const, x, y, key)

    return gradient


# Summing micro-batch gradients is its own small jit: with the sum inside the gradient, every
# parameter's add would be one more kernel to compile, also when iter_size is 1.
_add = jax.jit(lambda acc, grads: jax.tree.map(jnp.add, acc, grads), donate_argnums=0)


@functools.lru_cache(maxsize=16)
def _update_fn(optimizer: str, iter_size: int, schedule: str) -> Callable:
    """``update(state, summed grads, mask) -> (state, lr)``: one optimizer update."""
    tx = _transform(optimizer)

    # The update is elementwise over ~50 small arrays: LLVM -O1 compiles it in half the time of the
    # default -O2 and runs it as fast (benchmarks/README.md).
    @functools.partial(jax.jit, donate_argnums=0, compiler_options={"xla_backend_optimization_level": 1})
    def update(state: TrainState, acc, mask):
        grads = jax.tree.map(lambda g: g / iter_size, acc)
        lr = learning_rate(state.step, state.hparams, schedule)
        opt_state = state.opt_state._replace(hyperparams={**state.opt_state.hyperparams, "learning_rate": lr})
        updates, opt_state = tx.update(grads, opt_state, state.params)
        params = apply_mask(optax.apply_updates(state.params, updates), mask)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), lr

    return update


def make_train_step(graphdef, tc: TrainConfig, mask=None, *, to_params: Callable | None = None) -> Callable:
    """``train_step(state, images, labels, const=None) -> (state, metrics)``.

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
    to_params: the model's parameters from the trained ones and `const` (``to_params(state.params, const)``),
    when those are not the model's own: centroid fine-tuning trains codebooks, `const` holds the codes
    (an argument of the jitted gradient, not a constant compiled into it).
    """
    gradient = _gradient_fn(graphdef, to_params)
    update = _update_fn(tc.optimizer, tc.iter_size, tc.schedule)

    def train_step(state: TrainState, images, labels, const=None):
        acc, metrics = None, []
        for i in range(images.shape[0]):
            grads, m = gradient(state.params, state.rng, state.step, const, images[i], labels[i], i)
            acc = grads if acc is None else _add(acc, grads)
            metrics.append(m)
        state, lr = update(state, acc, mask)
        return state, {**jax.tree.map(lambda *v: sum(v) / len(v), *metrics), "lr": lr}

    return train_step


@contextlib.contextmanager
def train_batches(ds, tc: TrainConfig, epoch: int, start: int, stop: int):
    """Updates `start` to `stop` of epoch `epoch`'s shuffled training batches, batch_size x iter_size images each."""
    batches = ds.batches("train", tc.batch_size * tc.iter_size, seed=tc.seed, epoch=epoch, train=True,
                         limit=tc.train_limit, start=start)  # fmt: skip
    try:
        yield itertools.islice(batches, stop - start)
    finally:  # stop the prefetching thread now, not at interpreter exit
        getattr(batches, "close", lambda: None)()


def train_epoch(train_step, state: TrainState, batches: Iterable, tc: TrainConfig, *, bar=None, const=None,
                on_update: Callable | None = None, shard=None, **postfix) -> tuple[TrainState, dict, int]:  # fmt: skip
    """`train_step` over `batches`; returns (state, the mean of each metric, updates done).

    batches: (images, labels) of batch_size x iter_size examples, reshaped to micro-batches here. A NaN or
    infinite loss raises Diverged. bar: a ``sqzdse.train.progress.Progress``, shown `postfix` beside the loss;
    const: passed to every step (``make_train_step``); on_update(state): after every update (checkpoints, signals).
    shard: ``data_parallel``'s batch sharding: each micro-batch split across the devices.
    """
    seen, sums = 0, None
    for x, y in batches:
        x = x.reshape(tc.iter_size, tc.batch_size, *x.shape[1:])
        y = y.reshape(tc.iter_size, tc.batch_size)
        state, m = train_step(state, *_split((x, y), shard, axis=1), const)
        loss = float(m["loss"])  # a host sync per update; an update is >= 100 ms of work here
        if not math.isfinite(loss):
            raise Diverged(f"training loss became {loss} at update {int(state.step)}", state)
        sums = m if sums is None else jax.tree.map(jnp.add, sums, m)
        seen += 1
        if bar is not None:
            bar.update(tc.batch_size * tc.iter_size, **postfix, loss=f"{loss:.3f}", acc=f"{float(m['top1']):.3f}")
        if on_update is not None:
            on_update(state)
    if bar is not None:
        bar.end_epoch()
    return state, {k: float(v) / max(seen, 1) for k, v in jax.device_get(sums or {}).items()}, seen


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


@functools.lru_cache(maxsize=16)
def make_eval_step(graphdef) -> Callable:
    """``eval_step(params, images, labels, mask) -> summed metrics``, jitted (once per network); mask drops padding."""

    def eval_step(params, images, labels, mask):
        logits = nnx.merge(graphdef, params)(images)
        m = _metrics(logits, labels)
        return {k: jnp.sum(v * mask) for k, v in m.items()} | {"count": jnp.sum(mask)}

    return jax.jit(eval_step)


def data_parallel(tc: TrainConfig):
    """(batch sharding, replicated sharding) over the ``tc.devices`` local devices, or None for one: each batch split
    along its examples, the parameters and optimizer state on every device (GSPMD partitions the jitted steps).
    In a multi-process run (``sqzdse.runtime.join_processes``) the mesh is every process's devices."""
    multi = jax.process_count() > 1
    devices = jax.devices() if multi else jax.local_devices()
    n = len(devices) if tc.devices == 0 else tc.devices
    if multi and n != len(devices):
        raise C.ConfigError(f"devices={tc.devices}: a run of {jax.process_count()} processes trains on all their "
                            f"{len(devices)} devices; give devices=0")  # fmt: skip
    if n == 1:
        return None
    if n > len(devices):
        raise C.ConfigError(f"devices={n}: this process sees {len(devices)} {jax.default_backend()} device(s)")
    if tc.batch_size % n:
        raise C.ConfigError(f"batch_size={tc.batch_size} does not split evenly over {n} devices")
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(devices[:n]), ("data",))
    return NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def _put(x, sharding):
    """A host array onto `sharding`'s devices. Every process of a multi-process run holds the same whole array (the
    same batches, the same state) and places the parts its own devices hold."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _split(arrays, sharding, axis: int = 0):
    """Host arrays onto the devices, split along `axis` (None: as they are)."""
    if sharding is None:
        return arrays
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    spec = NamedSharding(sharding.mesh, P(*([None] * axis), "data"))
    return tuple(_put(a, spec) for a in arrays)


def evaluate(eval_step, params, batches, batch_size: int, shard=None) -> dict:
    """Mean loss / top-1 / top-5 over an iterator of (images, labels); the last batch is padded. shard: the batch
    sharding of ``data_parallel``, or None."""
    totals = None
    for x, y in batches:
        n = len(y)
        mask = np.zeros(batch_size, np.float32)
        mask[:n] = 1
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - n, y.dtype)])
        out = eval_step(params, *_split((x, y, mask), shard))
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        return {}
    totals = jax.device_get(totals)
    count = float(totals.pop("count"))
    return {k: float(v) / count for k, v in totals.items()}


# --------------------------------------------------------------------------- the run


class Diverged(SqzdseError, RuntimeError):
    """The training loss became NaN or infinite; `state`: the train state after that update (the one before
    was donated to it)."""

    def __init__(self, message: str, state: TrainState | None = None):
        super().__init__(message)
        self.state = state


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What ``train_and_evaluate`` returns: the run's summary (``summary()``, as in summary.json) and its state."""

    status: str  # "completed" or "diverged"
    reason: str | None  # why it diverged
    val_top1: float | None  # the last epoch's (None unless completed)
    val_top5: float | None
    test_top1: float | None
    test_top5: float | None
    test_loss: float | None
    params: int  # the model's parameters, bytes (float32) and MACs (``sqzdse.model.cost.summary``)
    bytes: int
    macs: int
    epochs: float
    updates: int
    train_seconds: float  # every epoch's, also those of an earlier session
    compile_seconds: float  # this session's
    wall_seconds: float  # this session's
    resumed_at: int  # the update this session's training started at (0: from scratch)
    history: list  # the epoch records (metrics.jsonl)
    config: dict
    train_config: dict
    version: str
    origin: dict | None  # who asked for the run (a sweep's study and trial)
    reused: bool = False  # the workdir held this run finished: not trained again
    graphdef: Any = dataclasses.field(default=None, repr=False, compare=False)  # live, never serialised
    state: TrainState | None = dataclasses.field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """The JSON-serialisable summary (what summary.json holds): every field but reused, graphdef and state."""
        live = {"reused", "graphdef", "state"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in live}

    @classmethod
    def from_summary(cls, summary: dict, **live) -> RunResult:
        """A result from a summary.json (an older version's lacks some fields: None)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("reused", "graphdef", "state")]
        return cls(**{k: summary.get(k) for k in names}, **live)


def load_run(workdir: str) -> tuple[C.SqueezeNetConfig, TrainConfig, Any, Any]:
    """(cfg, tc, graphdef, params) of the run in `workdir`, at its latest checkpoint.

    A DSD run's top directory (``sqzdse train --dsd``) holds no run of its own: its last phase, ``redense``, is
    loaded. Raises FileNotFoundError when there is no run or no checkpoint.
    """
    workdir, cfg, tc = ckpt.run_config(workdir)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"{workdir}: the run has no checkpoint yet")
    manager = ckpt.checkpoint_manager(workdir, reading=True)
    if manager.latest_step() is None:
        raise FileNotFoundError(f"{workdir}: the run has no checkpoint yet")
    graphdef, state = create_train_state(cfg, tc, 1, 1)
    return cfg, tc, graphdef, ckpt.restore(manager, state, workdir, fallback=False).params


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
) -> RunResult:
    """Train `cfg` under `tc`; returns the run's result (its summary also written to ``workdir/summary.json``).

    dataset: a ``sqzdse.data.pipeline.Dataset`` (default: ``data.load(tc.dataset)``).
    on_epoch: called with each epoch's record (a sweep reports to Optuna and may raise to prune).
    init_params, mask: start from these parameters / hold this pruning mask (``create_train_state``,
    ``make_train_step``); a resumed run takes its parameters from the checkpoint, the mask from the caller.
    on_busy: another process trains in `workdir`: None raises WorkdirBusy, a callable is told and the lock
    waited for (``workdir_lock``). origin: who asked for the run (a sweep's study and trial), kept in the summary.
    The result's ``status`` is "completed" or "diverged" (a NaN/inf loss stops the run, recorded). A workdir
    that holds this run finished is not trained again: its summary comes back as written, with ``reused``.
    SIGINT/SIGTERM stop the run at the next update: it checkpoints (with a workdir) and raises Interrupted.
    """
    if jax.process_index() > 0:  # a multi-process run: process 0 holds the workdir, the others follow it
        workdir, progress = None, False
    lock = ckpt.workdir_lock(workdir, on_busy) if workdir else contextlib.nullcontext()
    with deferred_signals(), lock:
        return _train_and_evaluate(cfg, tc, workdir, dataset, on_epoch, progress, init_params, mask, origin)


def _train_and_evaluate(cfg, tc, workdir, dataset, on_epoch, progress, init_params, mask, origin) -> RunResult:
    from sqzdse.data import pipeline as D

    t_start = time.perf_counter()
    ds = dataset if dataset is not None else D.load(tc.dataset, val_size=tc.val_size)
    if tuple(cfg.input_shape) != tuple(ds.info.image_shape) or cfg.num_classes != ds.info.num_classes:
        raise C.ConfigError(
            f"input_shape={cfg.input_shape}, num_classes={cfg.num_classes}: the dataset {ds.info.name} has"
            f" images {ds.info.image_shape} and {ds.info.num_classes} classes"
        )
    updates_per_epoch, total_updates = update_counts(ds, tc)
    n_epochs = math.ceil(total_updates / updates_per_epoch)

    graphdef, state = create_train_state(cfg, tc, total_updates, updates_per_epoch, init_params=init_params, mask=mask)
    manager, finished = None, None
    if workdir:
        ckpt.claim_workdir(workdir, cfg, tc)
        manager = ckpt.checkpoint_manager(workdir)
        state = ckpt.restore(manager, state, workdir)
        finished = ckpt.finished_summary(workdir, int(state.step))
    if jax.process_count() > 1:  # every process resumes where process 0's checkpoint stands
        state, finished = _from_process_0(state, finished)
    if finished is not None:
        return RunResult.from_summary(finished, reused=True, graphdef=graphdef, state=state)
    dp = data_parallel(tc)
    shard = None if dp is None else dp[0]
    if dp is not None:  # after the restore: the checkpoint is read as it was written, then replicated
        state = jax.tree.map(lambda x: _put(x, dp[1]), state)
    train_step = make_train_step(graphdef, tc, mask)
    eval_step = make_eval_step(graphdef)
    start = int(state.step)
    history = ckpt.read_history(workdir, start)

    def on_update(state):
        if manager is not None and tc.checkpoint_every and int(state.step) % tc.checkpoint_every == 0:
            ckpt.save(manager, state)
        if _signalled():
            _stop(manager, state, total_updates)

    micro = tc.batch_size
    status, reason, test = "completed", None, {}
    with compile_timer() as compiled, progress_bar(total_updates, start, progress) as bar:
        try:
            for epoch in range(start // updates_per_epoch, n_epochs):
                first = epoch * updates_per_epoch
                steps = min(updates_per_epoch, total_updates - first)
                if int(state.step) >= first + steps and len(history) > epoch:
                    continue  # trained and recorded (a finished fractional epoch whose summary.json was lost)
                t_epoch, compiled_before = time.perf_counter(), compiled[0]
                with train_batches(ds, tc, epoch, int(state.step) - first, steps) as batches:  # resume mid-epoch
                    state, train_m, seen = train_epoch(train_step, state, batches, tc, bar=bar, on_update=on_update,
                                                       shard=shard, epoch=epoch + 1)  # fmt: skip
                epoch_s = time.perf_counter() - t_epoch
                busy_s = epoch_s - (compiled[0] - compiled_before)  # the images/s leave out compiling
                t_eval = time.perf_counter()
                val = evaluate(eval_step, state.params, ds.batches("val", micro, seed=0, train=False,
                                                                   limit=tc.eval_limit), micro, shard)  # fmt: skip
                record = dict(
                    epoch=epoch + 1, step=int(state.step), lr=train_m.pop("lr", None),
                    train_loss=train_m.get("loss"), train_top1=train_m.get("top1"),
                    val_loss=val.get("loss"), val_top1=val.get("top1"), val_top5=val.get("top5"),
                    seconds=epoch_s, eval_seconds=time.perf_counter() - t_eval,
                    images_per_s=seen * micro * tc.iter_size / busy_s if busy_s > 0 else None,
                )  # fmt: skip
                if manager is not None:
                    ckpt.save(manager, state)
                    ckpt.append_record(workdir, record)
                history.append(record)
                if on_epoch is not None:
                    on_epoch(record)
        except Diverged as e:
            status, reason, state = "diverged", str(e), e.state
        if status == "completed":
            test = evaluate(eval_step, state.params, ds.batches("test", micro, seed=0, train=False,
                                                                limit=tc.eval_limit), micro, shard)  # fmt: skip
    cost = cost_summary(cfg)
    last = history[-1] if history else {}
    result = RunResult(
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
        train_seconds=sum(h["seconds"] for h in history),
        compile_seconds=compiled[0],
        wall_seconds=time.perf_counter() - t_start,
        resumed_at=start,
        history=history,
        config=C.to_dict(cfg),
        train_config=dataclasses.asdict(tc),
        version=__version__,
        origin=origin,
        graphdef=graphdef,
        state=state,
    )
    if workdir:
        ckpt.write_json(os.path.join(workdir, "summary.json"), result.summary())
    return result


def _from_process_0(state: TrainState, summary: dict | None) -> tuple[TrainState, dict | None]:
    """Process 0's state (restored from its checkpoint) and finished run's summary, in every process."""
    from jax.experimental import multihost_utils as mh

    state = mh.broadcast_one_to_all(jax.tree.map(np.asarray, state))
    text = np.frombuffer(json.dumps(summary).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
    n = int(mh.broadcast_one_to_all(np.int64(len(text))))
    buf = np.zeros(n, np.uint8)
    buf[: len(text)] = text
    return jax.tree.map(np.asarray, state), json.loads(bytes(np.asarray(mh.broadcast_one_to_all(buf))))


def _signalled() -> bool:
    """Whether a deferred SIGINT/SIGTERM arrived; in a multi-process run, at any process (all stop at one update)."""
    if jax.process_count() == 1:
        return bool(signal_pending())
    from jax.experimental import multihost_utils as mh

    got = np.asarray(mh.process_allgather(np.int32(signal_pending())))
    if got.any():
        note_signal(int(got[got != 0][0]))
    return bool(got.any())


def _stop(manager, state: TrainState, total: int) -> None:
    """A deferred signal arrived: checkpoint (with a workdir) and raise Interrupted."""
    step = int(state.step)
    if manager is None:
        saved = "process 0 saves the checkpoint" if jax.process_index() > 0 else "no workdir, nothing saved"
        check_signals(f"at update {step} of {total}: {saved}")
    ckpt.save(manager, state)
    check_signals(f"at update {step} of {total}: checkpoint saved in {manager.directory}; a rerun resumes from it")


def progress_bar(total: int, done: int, enabled: bool):
    """A ``Progress`` of `total` updates, `done` of them done (a null context when not `enabled`)."""
    return Progress(total, done) if enabled else contextlib.nullcontext()
