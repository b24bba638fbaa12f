"""Terminal progress: a redrawn bar on a TTY, plain throttled lines in logs and CI."""
from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """`update(done, **metrics)` after each unit of work; `close()` at the end.

    On a terminal the line is redrawn at most `redraw_s` apart; elsewhere one line is printed
    at most every `line_s` seconds (and for the first and last unit) so logs stay readable.
    """

    def __init__(self, total: int, label: str, stream=None, redraw_s: float = 0.1, line_s: float = 10.0,
                 enabled: bool = True):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = redraw_s if self.tty else line_s
        self.enabled = enabled
        self.started = time.perf_counter()
        self.last_shown = -float("inf")
        self.width = 0

    def line(self, done: int, metrics: dict) -> str:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - done) if done else 0.0
        bar_len = 20
        filled = int(bar_len * done / max(self.total, 1))
        parts = [f"{self.label} [{'#' * filled}{'.' * (bar_len - filled)}] {done}/{self.total}"]
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
        parts.append(f"elapsed {_duration(elapsed)} eta {_duration(eta)}")
        return "  ".join(parts)

    def update(self, done: int, **metrics) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last_shown < self.interval and done not in (1, self.total):
            return
        self.last_shown = now
        text = self.line(done, metrics)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
