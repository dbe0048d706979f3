"""Training progress on stderr: a live bar on a terminal, one plain line per epoch otherwise.

Without a terminal (a log file, CI, a cluster job) a live bar writes a carriage-return update per training
step, kilobytes for a few tiny trials; one line per epoch says the same. Images/s leave out each epoch's first
update, whose time is mostly compilation (the first bar of a run would say a few images/s otherwise).
"""

from __future__ import annotations

import sys
import time


class Progress:
    """Progress of `total` updates, `done` of them before; live: a tqdm bar (default: when `stream` is a tty)."""

    def __init__(self, total: int, done: int = 0, *, live: bool | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.total, self.done = total, done
        self.bar = None
        if self.live:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="update", dynamic_ncols=True, leave=True, file=self.stream)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.t_first, self.images, self.fields = None, 0, {}

    def update(self, images: int, **fields) -> None:
        """One update of `images` images done; `fields` (loss, epoch, ...) are shown beside the count."""
        now = time.perf_counter()
        self.done += 1
        if self.t_first is None:
            self.t_first = now  # images/s count from the end of the first update: compilation is not throughput
        else:
            self.images += images
        rate = {"img_s": f"{self.images / (now - self.t_first):.0f}"} if self.images else {}
        self.fields = {**fields, **rate}
        if self.bar is not None:
            self.bar.set_postfix(**self.fields)
            self.bar.update(1)

    def end_epoch(self) -> None:
        """The epoch's last update is done: without a live bar, its one line."""
        if self.bar is None and self.fields:
            shown = " ".join(f"{k}={v}" for k, v in self.fields.items())
            print(f"sqzdse: update {self.done}/{self.total} {shown}", file=self.stream, flush=True)
        self._new_epoch()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
