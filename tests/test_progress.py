"""Training progress: a live bar on a terminal, one plain line per epoch otherwise; images/s without compilation."""

import io

from sqzdse.train import progress as G


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_epochs(p, clock, epochs=2, updates=4, first_s=30.0):
    for epoch in range(epochs):
        for i in range(updates):
            clock.t += first_s if i == 0 else 0.5  # the first update compiles
            p.update(16, epoch=epoch + 1, loss="1.000")
        p.end_epoch()


def test_without_a_terminal_one_plain_line_per_epoch(monkeypatch):
    clock, out = Clock(), io.StringIO()
    monkeypatch.setattr(G.time, "perf_counter", clock)
    with G.Progress(8, stream=out) as p:
        assert not p.live
        run_epochs(p, clock)
    assert out.getvalue().splitlines() == [
        "sqzdse: update 4/8 epoch=1 loss=1.000 img_s=32",  # 3 x 16 images in 1.5 s: the 30 s first update left out
        "sqzdse: update 8/8 epoch=2 loss=1.000 img_s=32",
    ]
    assert "\r" not in out.getvalue()


def test_on_a_terminal_a_live_bar_whose_rate_leaves_out_the_first_update(monkeypatch):
    clock, out = Clock(), Terminal()
    monkeypatch.setattr(G.time, "perf_counter", clock)
    with G.Progress(8, stream=out) as p:
        assert p.live
        clock.t += 30.0
        p.update(16, loss="1.000")
        assert "img_s" not in p.fields  # after one update, all of it compilation: no rate yet
        for _ in range(3):
            clock.t += 0.5
            p.update(16, loss="1.000")
        assert p.fields["img_s"] == "32"
        p.end_epoch()
    text = out.getvalue()
    assert "\r" in text and "4/8" in text and "img_s=32" in text and "sqzdse: update" not in text


def test_a_run_without_a_terminal_logs_one_line_per_epoch(capsys):
    from builders import synthetic, tiny

    from sqzdse.train import loop as T

    tc = T.TrainConfig(batch_size=16, epochs=2, warmup_epochs=0, init="msra")
    assert T.train_and_evaluate(tiny(), tc, None, dataset=synthetic(), progress=True).status == "completed"
    err = capsys.readouterr().err  # pytest's capture is no terminal
    lines = [line.split() for line in err.splitlines() if line.startswith("sqzdse: update")]
    assert [words[2:4] for words in lines] == [["10/20", "epoch=1"], ["20/20", "epoch=2"]] and "\r" not in err
    assert all(words[-1].startswith("img_s=") for words in lines)
