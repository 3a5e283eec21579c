"""Progress of a run on the terminal: a bar where there is one, a line every few seconds in a log."""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from atlaspipe.model import RunStatus

LOG_INTERVAL_SECONDS = 5.0


class Progress:
    """Shows a run's status as it changes; the final state is always shown, once.

    On a terminal this is a tqdm bar over the events; elsewhere (a CI log, a container's stdout)
    a bar would write hundreds of frames, so it prints one line every ``LOG_INTERVAL_SECONDS``.
    """

    def __init__(self, quiet: bool = False, stream: TextIO | None = None,
                 interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = self.stream.isatty()
        self.interval = interval
        self._bar: Any = None
        self._last_line = -math.inf  # the first state is shown at once
        self._started = time.monotonic()
        self._last: RunStatus | None = None
        self._printed: RunStatus | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def update(self, status: RunStatus) -> None:
        self._last = status
        if self.quiet:
            return
        if self.interactive:
            self._draw_bar(status)
        elif status.terminal or time.monotonic() - self._last_line >= self.interval:
            self._print_line(status)

    def _print_line(self, status: RunStatus) -> None:
        self._last_line = time.monotonic()
        self._printed = status
        print(self.line(status), file=self.stream, flush=True)

    def _draw_bar(self, status: RunStatus) -> None:
        if self._bar is None and status.events_total:
            from tqdm import tqdm

            self._bar = tqdm(total=status.events_total, unit="ev", unit_scale=True, desc=f"run {status.run_id}",
                             file=self.stream, dynamic_ncols=True)
        if self._bar is not None:
            self._bar.update(status.events_read - self._bar.n)
            self._bar.set_postfix_str(f"{status.chunks_done}/{status.chunks_total} chunks, {status.state}",
                                      refresh=False)

    def line(self, status: RunStatus) -> str:
        """One line of progress, e.g. ``run … running: 12/40 chunks, 1.2M/4.0M events, 310k ev/s``."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        text = f"run {status.run_id} {status.state}: {status.chunks_done}/{status.chunks_total} chunks"
        if status.events_total:
            text += f", {_si(status.events_read)}/{_si(status.events_total)} events, " \
                    f"{_si(status.events_read / elapsed)} ev/s"
        if status.chunks_failed:
            text += f", {status.chunks_failed} failed"
        if status.message:
            text += f" ({status.message})"
        return text

    def note(self, text: str) -> None:
        """A message between progress updates, without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar, and show the last state seen as a line unless that line is already shown."""
        if self._bar is not None:
            if self._last is not None:
                self._draw_bar(self._last)
            self._bar.close()
            self._bar = None
        if self._last is not None and not self.quiet and self._printed != self._last:
            self._print_line(self._last)


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}"
