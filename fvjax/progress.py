"""A small progress bar on stderr: a redrawn line on a terminal, a line every few seconds else.

The time left is estimated from steady work only: the first block of work holds the
compilation (a render's first step can take a minute where later ones take a tenth of a
second), so until a block after it has finished the bar says ``left ?``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Counts ``done`` out of ``total`` units of work and shows rate and time left.

    ``clock`` (seconds, ``time.perf_counter`` by default) times the work; the rate counts only
    what was done after the first :meth:`update`, whose block holds the compilation, and
    leaves out what :meth:`skip` counted (work restored, not done).

    >>> import io
    >>> ticks = iter([0.0, 60.0, 61.0, 62.0])  # the first step compiles for 60 s, then 1 s a step
    >>> stream = io.StringIO()
    >>> bar = Progress(4, "render", stream, interval=0, clock=lambda: next(ticks))
    >>> bar.update(1); bar.update(1); bar.update(1)
    >>> print(stream.getvalue())  # doctest: +NORMALIZE_WHITESPACE
    render [######..................]  25.0% 1/4 steps ?/s elapsed 01:00 left ?
    render [############............]  50.0% 2/4 steps 1.0/s elapsed 01:01 left 00:02
    render [##################......]  75.0% 3/4 steps 1.0/s elapsed 01:02 left 00:01
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool = True,
        unit: str = "step",
        interval: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.done = 0
        self.note = ""
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._interval = interval if interval is not None else (0.2 if self._tty else 5.0)
        self._clock = clock
        self._start = clock()
        self._last = -float("inf")
        self._shown = -1  # the `done` count last drawn
        # (time, done) when the first block of work ended; units skipped after it
        self._steady: tuple[float, int] | None = None
        self._skipped = 0

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Record ``n`` more units done, with an optional note (e.g. the chunk)."""
        self._count(n, note, worked=True)

    def skip(self, n: int, note: str | None = None) -> None:
        """Record ``n`` units that needed no work (restored from a checkpoint): they count as
        done, not toward the rate."""
        self._count(n, note, worked=False)

    def _count(self, n: int, note: str | None, worked: bool) -> None:
        self.done += n
        if note is not None:
            self.note = note
        now = self._clock()
        if not worked and self._steady is not None:
            self._skipped += n
        elif worked and self._steady is None and n > 0:  # its block held the compilation
            self._steady = (now, self.done)
        if now - self._last >= self._interval or self.done >= self.total:
            self._last = now
            self._draw(now)

    def rate(self, now: float | None = None) -> float | None:
        """Units a second of the steady work so far (``None`` until a block after the first,
        which holds the compilation, has finished)."""
        if self._steady is None:
            return None
        now = self._clock() if now is None else now
        since, done = self._steady
        worked = self.done - done - self._skipped
        return worked / (now - since) if worked > 0 and now > since else None

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        self._shown = self.done
        rate = self.rate(now)
        left = "?" if rate is None else _clock((self.total - self.done) / rate)
        filled = int(24 * self.done / self.total)
        bar = "#" * filled + "." * (24 - filled)
        line = (
            f"{self.label} [{bar}] {100 * self.done / self.total:5.1f}% "
            f"{self.done}/{self.total} {self.unit}s {'?' if rate is None else f'{rate:.1f}'}/s "
            f"elapsed {_clock(now - self._start)} left {left} {self.note}"
        )
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            if self._shown != self.done:
                self._draw(self._clock())
            if self._tty:
                self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
