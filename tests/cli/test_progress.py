"""Progress: a bar on a terminal (a real pty), a line every few seconds elsewhere, the final state always."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import termios
import time

from atlaspipe.cli.progress import Progress
from atlaspipe.model import RunState, RunStatus

RUN = "20261201-000000-abcdef"


def statuses(chunks: int = 12, events_per_chunk: int = 1000) -> list[RunStatus]:
    """A run's statuses as a follower sees them: planning, each chunk done, then succeeded."""
    total = chunks * events_per_chunk
    common = {"run_id": RUN, "executor": "celery", "started": "2026-12-01T00:00:00+00:00",
              "updated": "2026-12-01T00:00:00+00:00", "chunks_total": chunks, "events_total": total}
    seen = [RunStatus(state=RunState.PLANNING, **{**common, "chunks_total": 0, "events_total": 0})]
    seen += [RunStatus(state=RunState.RUNNING, chunks_done=done, events_read=done * events_per_chunk, **common)
             for done in range(chunks + 1)]
    seen.append(RunStatus(state=RunState.SUCCEEDED, chunks_done=chunks, events_read=total, **common))
    return seen


def test_a_log_gets_one_line_per_interval_and_the_final_state() -> None:
    stream = io.StringIO()
    with Progress(stream=stream, interval=0.2) as progress:
        for status in statuses(chunks=40)[:-1]:
            progress.update(status)
            time.sleep(0.02)
        progress.update(statuses(chunks=40)[-1])
    lines = stream.getvalue().splitlines()
    # 42 updates over about 0.85 s: a line at most every 0.2 s, plus the final state.
    assert 3 <= len(lines) <= 7, lines
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert lines[-1].startswith(f"run {RUN} succeeded: 40/40 chunks, 40.0k/40.0k events")


def test_a_log_shows_the_last_state_even_if_the_run_is_not_over() -> None:
    """Following stopped (Ctrl+C, an error) between lines: closing shows where the run was."""
    stream = io.StringIO()
    with Progress(stream=stream, interval=3600.0) as progress:
        for status in statuses()[:8]:
            progress.update(status)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith(f"run {RUN} running: 6/12 chunks"), lines


def test_quiet_prints_nothing() -> None:
    stream = io.StringIO()
    with Progress(quiet=True, stream=stream) as progress:
        for status in statuses():
            progress.update(status)
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_and_then_the_final_line() -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        with open(follower, "w", encoding="utf-8", closefd=False) as stream:
            assert stream.isatty()
            with Progress(stream=stream, interval=3600.0) as progress:
                assert progress.interactive
                for status in statuses():
                    progress.update(status)
        os.close(follower)
        follower = -1
        output = b""
        while True:
            try:
                block = os.read(leader, 65536)
            except OSError:  # EIO: the follower side is closed and everything is read
                break
            if not block:
                break
            output += block
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    text = output.decode()
    assert "\r" in text, "a bar redraws its line"
    frames = [frame for frame in re.split(r"[\r\n]+", text) if frame.strip()]
    assert any(re.search(r"run 20261201-000000-abcdef: +100%\|.*12/12 chunks, succeeded", f) for f in frames), frames
    assert frames[-1].startswith(f"run {RUN} succeeded: 12/12 chunks, 12.0k/12.0k events"), frames
