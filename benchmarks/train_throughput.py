"""Training and evaluation images/s of the small-input SqueezeNet: JAX (sqzdse.train.loop) against PyTorch.

    python benchmarks/train_throughput.py                       # 28x28x1 and 32x32x3, batch 128, 2 threads
    python benchmarks/train_throughput.py --inputs 28x28x1 --no-torch --steps 10
    python benchmarks/train_throughput.py --inputs 28x28x1 --widths 32 --threads 1   # what a sweep worker trains

The network is ``squeezenet_small`` with the paper's defaults (base_e=128, incr_e=128,
freq=2, pct3x3=0.5, sr=0.125), or the shipped sweeps' widths with ``--widths 32``;
training is SGD momentum 0.9 + weight decay on
softmax cross-entropy, with dropout. The PyTorch peer is the same network written
with torch.nn (conv1, Fire modules concatenating expand1x1 and expand3x3, ceil-mode
max pools, dropout, conv10, ReLU, global average pool), run as float32 NCHW,
float32 channels-last (its fastest float32 form) and bfloat16 autocast.

Each framework and form runs in its own worker process (so each has its own peak
RSS and no thread pool of one spins on the other's time); the workers are started
together and then take turns, round after round, so load from anything else on the
machine falls on all of them alike. Reported figures are medians over all timed
steps; "spread" is the range of the per-round medians; "other_load_cores" is the CPU
time other processes took during each round, in cores (0 on a quiet machine; torch's
OpenMP pool slows down far more than XLA's when it is not). All workers are limited to
the same `--threads` cores (XLA through sqzdse.runtime.configure_cpu, torch through
set_num_threads and the same CPU affinity). Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # an installed sqzdse, or one on PYTHONPATH, takes precedence

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 2e-4
TORCH_FORMS = ("float32", "channels_last", "bfloat16")


def parse_shape(s: str) -> tuple[int, int, int]:
    h, w, c = (int(v) for v in s.lower().split("x"))
    return h, w, c


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- workers


class JaxWorker:
    """sqzdse.train.loop's jitted train and eval steps on random images."""

    def __init__(self, shape, batch: int, dtype: str, threads: int, widths: int):
        from sqzdse import runtime

        self.flags = runtime.configure_cpu(threads)
        import numpy as np

        from sqzdse.model.config import squeezenet_small
        from sqzdse.train import loop as T

        cfg = squeezenet_small(input_shape=shape, base_e=widths, incr_e=widths)
        tc = T.TrainConfig(
            optimizer="sgd",
            lr=LR,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            schedule="constant",
            warmup_epochs=0.0,
            batch_size=batch,
            dtype=dtype,
        )
        graphdef, self.state = T.create_train_state(cfg, tc, total_steps=10**6, steps_per_epoch=1000)
        rng = np.random.default_rng(0)
        # A few distinct host batches, fed as numpy like the training loop does.
        self.batches = [
            (rng.standard_normal((1, batch, *shape), np.float32), rng.integers(0, 10, (1, batch)).astype(np.int32))
            for _ in range(4)
        ]
        self.mask = np.ones(batch, np.float32)
        self.train_step = T.make_train_step(graphdef, tc)
        self.eval_step = T.make_eval_step(graphdef)
        self.i = 0
        # First-step compile time: what JAX spends tracing, lowering and compiling in the first call.
        with T.compile_timer() as compiled:
            self.train()
        self.compile_s = compiled[0]
        with T.compile_timer() as compiled:
            self.eval()
        self.eval_compile_s = compiled[0]

    def train(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        t = time.perf_counter()
        self.state, m = self.train_step(self.state, x, y)
        loss = float(m["loss"])  # the host sync sqzdse.train.loop does every update
        dt = time.perf_counter() - t
        if loss != loss:
            raise FloatingPointError("JAX training loss is NaN")
        return dt

    def eval(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        t = time.perf_counter()
        out = self.eval_step(self.state.params, x[0], y[0], self.mask)
        float(out["loss"])
        return time.perf_counter() - t

    def info(self) -> dict:
        import jax

        return dict(
            compile_s=self.compile_s,
            eval_compile_s=self.eval_compile_s,
            xla_flags=self.flags,
            jax=jax.__version__,
            devices=str(jax.devices()),
        )


def torch_squeezenet(cfg):
    """The same network in torch.nn, built from sqzdse.model.plan.layer_plan (no JAX involved)."""
    import torch
    from torch import nn

    from sqzdse.model.plan import layer_plan

    plan = layer_plan(cfg)

    def pool():
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    class Fire(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.squeeze1x1 = nn.Conv2d(spec.in_channels, spec.squeeze, 1)
            self.expand1x1 = nn.Conv2d(spec.squeeze, spec.e1x1, 1)
            self.expand3x3 = nn.Conv2d(spec.squeeze, spec.e3x3, 3, padding=1)

        def forward(self, x):
            s = torch.relu(self.squeeze1x1(x))
            return torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], 1)

    st = cfg.stem
    layers = [nn.Conv2d(cfg.input_shape[2], st.filters, st.kernel, st.stride, st.pad), nn.ReLU()]
    if plan.stem_pool:
        layers.append(pool())
    for spec in plan.fires:
        layers.append(Fire(spec))
        if spec.pool_after:
            layers.append(pool())
    layers += [
        nn.Dropout(cfg.dropout),
        nn.Conv2d(plan.conv10_in, plan.conv10_out, 1, padding=plan.conv10_pad),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    return nn.Sequential(*layers)


class TorchWorker:
    """The torch.nn peer: float32 NCHW, float32 channels-last, or bfloat16 autocast (channels-last)."""

    def __init__(self, shape, batch: int, form: str, threads: int, widths: int):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
        import torch

        from sqzdse.model.config import squeezenet_small

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch, self.form = torch, form
        self.fmt = torch.contiguous_format if form == "float32" else torch.channels_last
        cfg = squeezenet_small(input_shape=shape, base_e=widths, incr_e=widths)
        self.model = torch_squeezenet(cfg).to(memory_format=self.fmt)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.loss = torch.nn.CrossEntropyLoss()
        h, w, c = shape
        g = torch.Generator().manual_seed(0)
        self.batches = [
            (torch.randn(batch, c, h, w, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(4)
        ]
        self.compile_s = 0.0
        self.i = 0

    def _autocast(self):
        import contextlib

        if self.form == "bfloat16":
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def train(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        t = time.perf_counter()
        self.model.train()
        x = x.contiguous(memory_format=self.fmt)
        with self._autocast():
            loss = self.loss(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        value = loss.item()
        dt = time.perf_counter() - t
        if value != value:
            raise FloatingPointError("torch training loss is NaN")
        return dt

    def eval(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        t = time.perf_counter()
        self.model.eval()
        with self.torch.inference_mode(), self._autocast():
            self.loss(self.model(x.contiguous(memory_format=self.fmt)), y).item()
        return time.perf_counter() - t

    def info(self) -> dict:
        return dict(compile_s=0.0, torch=self.torch.__version__, threads=self.torch.get_num_threads())


def worker_main(args) -> None:
    """Serve commands on stdin ("train N", "eval N", "quit"), one JSON line per answer on stdout."""
    shape = parse_shape(args.inputs)
    if args.worker == "jax":
        w = JaxWorker(shape, args.batch, args.dtype, args.threads, args.widths)
    else:
        w = TorchWorker(shape, args.batch, args.worker.removeprefix("torch-"), args.threads, args.widths)
    for _ in range(args.warmup):
        w.train()
        w.eval()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints goes to stderr, not into the protocol
    print(json.dumps(dict(ready=True, **w.info(), rss_after_warmup_mib=peak_rss_mib())), file=out, flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "quit":
            print(json.dumps(dict(peak_rss_mib=peak_rss_mib())), file=out, flush=True)
            return
        n = int(rest[0])
        times = [getattr(w, cmd)() for _ in range(n)]
        print(json.dumps(dict(times=times)), file=out, flush=True)


# --------------------------------------------------------------------------- coordinator


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)

    def ask(self, cmd: str | None = None) -> dict:
        if cmd is not None:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit code {self.p.wait()})")
        return json.loads(line)


def _busy_ticks() -> int:
    """Clock ticks all CPUs spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def _own_ticks(pids) -> int:
    """Clock ticks used by these processes (utime + stime, /proc/PID/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def torch_available() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def summarize(rounds: list[list[float]], batch: int) -> dict:
    all_times = [t for r in rounds for t in r]
    per_round = [batch / statistics.median(r) for r in rounds]
    return dict(
        images_per_s=round(batch / statistics.median(all_times), 1),
        spread=[round(min(per_round), 1), round(max(per_round), 1)],
        step_ms=round(1e3 * statistics.median(all_times), 1),
    )


def run_shape(args, shape: str, forms: list[str]) -> dict:
    base = [sys.executable, __file__, "--inputs", shape, "--batch", str(args.batch), "--threads", str(args.threads)]
    base += ["--warmup", str(args.warmup), "--dtype", args.dtype, "--widths", str(args.widths)]
    procs, info = [], {}
    for f in forms:  # one at a time, so that no compile time is measured on shared cores
        procs.append(Proc(f, base + ["--worker", f]))
        info[f] = procs[-1].ask()
    train = {p.name: [] for p in procs}
    evals = {p.name: [] for p in procs}
    # Load from other processes: CPU time the machine spent busy, less this benchmark's own.
    pids = [os.getpid()] + [p.p.pid for p in procs]
    hz = os.sysconf("SC_CLK_TCK")
    foreign = []
    for r in range(args.rounds):
        busy, own, t0 = _busy_ticks(), _own_ticks(pids), time.perf_counter()
        order = procs if r % 2 == 0 else procs[::-1]  # alternate who goes first
        for p in order:
            train[p.name].append(p.ask(f"train {args.steps}")["times"])
        for p in order:
            evals[p.name].append(p.ask(f"eval {args.steps}")["times"])
        other = (_busy_ticks() - busy) - (_own_ticks(pids) - own)
        foreign.append(max(other, 0) / hz / (time.perf_counter() - t0))
    for p in procs:
        info[p.name].update(p.ask("quit"))
        p.p.wait()
    out = {}
    for name in train:
        i = info[name]
        out[name] = dict(
            train=summarize(train[name], args.batch),
            eval=summarize(evals[name], args.batch),
            compile_s=round(i["compile_s"], 2),
            peak_rss_mib=round(i["peak_rss_mib"], 1),
        )
        if name == "jax":
            out[name]["eval_compile_s"] = round(i["eval_compile_s"], 2)
            out[name]["xla_flags"] = i["xla_flags"]
    out["other_load_cores"] = dict(
        median=round(statistics.median(foreign), 2),
        max=round(max(foreign), 2),
        per_round=[round(v, 2) for v in foreign],
    )
    jax_train = out["jax"]["train"]["images_per_s"]
    out["ratio_jax_over_torch"] = {
        f: round(jax_train / out[f"torch-{f}"]["train"]["images_per_s"], 3) for f in TORCH_FORMS if f"torch-{f}" in out
    }
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework per round (default 5)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling (default 2)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--inputs", default="28x28x1,32x32x3", help="comma-separated HxWxC (default 28x28x1,32x32x3)")
    p.add_argument("--threads", type=int, default=2, help="cores for each framework (default 2; 1: as a sweep worker)")
    p.add_argument("--widths", type=int, default=128, help="base_e = incr_e (default 128; the shipped sweeps: 32)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="JAX compute dtype")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)

    forms = ["jax"]
    note = None
    if args.no_torch:
        note = "PyTorch peer skipped (--no-torch)"
    elif torch_available() is None:
        note = "PyTorch is not installed: peer skipped (pip install torch==2.13.0 for the CPU build)"
        print(f"note: {note}", file=sys.stderr)
    else:
        forms += [f"torch-{f}" for f in TORCH_FORMS]
    from sqzdse.runtime import BF16_FLAGS, cpu_flags, cpu_model

    load = os.getloadavg()
    results = {}
    for shape in args.inputs.split(","):
        parse_shape(shape)
        results[shape] = run_shape(args, shape, forms)
    report = dict(
        machine=dict(
            cpu=cpu_model(),
            cpus=os.cpu_count(),
            python=platform.python_version(),
            torch=torch_available(),
            flags=sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_vnni", *BF16_FLAGS}),
        ),
        settings=dict(
            batch=args.batch,
            threads=args.threads,
            steps=args.steps,
            rounds=args.rounds,
            warmup=args.warmup,
            jax_dtype=args.dtype,
            network=f"squeezenet_small (base_e={args.widths}, incr_e={args.widths}, freq=2, pct3x3=0.5, sr=0.125)",
        ),
        loadavg_before=[round(v, 2) for v in load],
        loadavg_after=[round(v, 2) for v in os.getloadavg()],
        results=results,
    )
    if note:
        report["note"] = note
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
