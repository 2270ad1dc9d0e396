"""The progress bar: the time left is estimated from steady steps, never from compilation."""

import io

from fvjax.progress import Progress


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _bar(total, clock, interval=0.0):
    stream = io.StringIO()
    return Progress(total, "job", stream, interval=interval, clock=clock), stream


def test_the_first_estimate_waits_for_a_steady_step():
    clock = FakeClock()
    bar, stream = _bar(2400, clock)
    clock.now = 70.0  # the first step compiled for 70 s: a four-minute job
    bar.update(1)
    first = stream.getvalue().splitlines()[-1]
    assert "left ?" in first and "?/s" in first  # not "left 1:09:59"
    assert bar.rate() is None
    for _ in range(10):
        clock.now += 0.1
        bar.update(1)
    last = stream.getvalue().splitlines()[-1]
    assert "11/2400 steps 10.0/s" in last
    assert "left 03:58" in last  # 2389 steps at 10 a second
    bar.close()
    assert stream.getvalue().endswith("\n")


def test_steps_restored_from_a_checkpoint_do_not_speed_the_estimate():
    clock = FakeClock()
    bar, stream = _bar(100, clock)
    bar.skip(40, note="chunk 1/2 (from checkpoint)")  # before any work
    assert bar.rate() is None and "left ?" in stream.getvalue()
    clock.now = 30.0
    bar.update(1)  # compiled
    clock.now = 31.0
    bar.update(1)
    bar.skip(8)  # restored mid-run: counted, no time spent on it
    clock.now = 32.0
    bar.update(1)
    assert bar.done == 51 and bar.rate() == 1.0
    assert stream.getvalue().splitlines()[-1].endswith("left 00:49 chunk 1/2 (from checkpoint)")


def test_lines_are_drawn_every_interval_and_at_the_end():
    clock = FakeClock()
    bar, stream = _bar(10, clock, interval=5.0)
    for _ in range(10):
        clock.now += 1.0
        bar.update(1, note="chunk 1/1")
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1].split("%")[0].strip() for line in lines] == [
        "10.0",
        "60.0",
        "100.0",
    ]
    bar.close()
    assert len(stream.getvalue().splitlines()) == 3  # the end was drawn already


def test_a_disabled_bar_counts_and_draws_nothing():
    clock = FakeClock()
    bar = Progress(3, stream=io.StringIO(), enabled=False, clock=clock)
    bar.update(3)
    bar.close()
    assert bar.done == 3 and bar.stream.getvalue() == ""
