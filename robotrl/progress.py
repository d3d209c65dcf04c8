"""Rich progress bar for training: steps, env-steps/s, recent return, last evaluation and ETA."""

from __future__ import annotations

import time
from collections import deque

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainingProgress:
    """A context manager wrapping a rich Progress; a no-op when disabled (tests, non-interactive use)."""

    def __init__(self, total: int, start: int, enabled: bool = True, description: str = "train") -> None:
        self.enabled = enabled
        self.window: deque[tuple[float, int]] = deque(maxlen=50)
        self.window.append((time.perf_counter(), start))
        if enabled:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>7} steps/s"), TextColumn("{task.fields[ret]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )
            self.task = self.bar.add_task(description, total=total, completed=start, fps="-", ret="")
        self.description = description

    def status(self, text: str | None) -> None:
        """Show what the run is doing besides stepping (e.g. training the reward); None restores the name."""
        if self.enabled:
            self.bar.update(self.task, description=f"{self.description}: {text}" if text else self.description)

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)

    def rate(self) -> float:
        """Env steps per second over the recent window."""
        (t0, s0), (t1, s1) = self.window[0], self.window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, step: int, recent_return: float | None, eval_return: float | None) -> None:
        now = time.perf_counter()
        if now - self.window[-1][0] < 0.2:  # cheap: refresh at most 5x per second
            return
        self.window.append((now, step))
        if not self.enabled:
            return
        ret = f"return {recent_return:9.1f}" if recent_return is not None else ""
        if eval_return is not None:
            ret += f"  eval {eval_return:9.1f}"
        self.bar.update(self.task, completed=step, fps=f"{self.rate():.0f}", ret=ret)
