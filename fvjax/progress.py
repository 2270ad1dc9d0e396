"""A small progress bar on stderr: a redrawn line on a terminal, a line every few seconds else."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts ``done`` out of ``total`` units of work and shows rate and time left.

    >>> import io
    >>> bar = Progress(total=4, label="render", stream=io.StringIO())
    >>> bar.update(4); bar.close()
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool = True,
        unit: str = "step",
        interval: float | None = None,
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
        self._start = time.perf_counter()
        self._last = -float("inf")
        self._shown = -1  # the `done` count last drawn

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Record ``n`` more units done, with an optional note (e.g. the chunk)."""
        self.done += n
        if note is not None:
            self.note = note
        now = time.perf_counter()
        if now - self._last >= self._interval or self.done >= self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if not self.enabled:
            return
        self._shown = self.done
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(24 * self.done / self.total)
        bar = "#" * filled + "." * (24 - filled)
        line = (
            f"{self.label} [{bar}] {100 * self.done / self.total:5.1f}% "
            f"{self.done}/{self.total} {self.unit}s {rate:.1f}/s "
            f"elapsed {_clock(elapsed)} left {_clock(left)} {self.note}"
        )
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            if self._shown != self.done:
                self._draw(time.perf_counter())
            if self._tty:
                self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
