"""Learning-curve plots from one or more runs' metrics.jsonl files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.logger import read_metrics

DEFAULT_METRICS = ("eval/return", "train/episode_return")
# how good a learned reward is (logged by preference-learning runs), drawn under the return curves by default
REWARD_METRICS = ("reward/true_pref_accuracy", "reward/holdout_accuracy", "reward/return_correlation",
                  "reward/train_accuracy", "reward/starc_distance")


def series(run_dir: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric` in a run, in step order."""
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if metric in r]
    steps = np.array([r["step"] for r in records], dtype=np.int64)
    values = np.array([r[metric] for r in records], dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window 1 = unchanged)."""
    if window <= 1 or len(values) == 0:
        return values
    kernel_sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(1, len(values) + 1) - counts
    return (kernel_sums[np.arange(1, len(values) + 1)] - kernel_sums[starts]) / counts


def reward_metrics(run_dirs: Sequence[Path]) -> list[str]:
    """The `REWARD_METRICS` that at least one of the runs logged, in `REWARD_METRICS` order."""
    present: set[str] = set()
    for run_dir in run_dirs:
        for record in read_metrics(run_dir / "metrics.jsonl"):
            present.update(record)
    return [m for m in REWARD_METRICS if m in present]


def plot_runs(run_dirs: list[Path], metrics: list[str], out: Path, window: int = 1, title: str | None = None,
              extra: Sequence[str] = ()) -> Path:
    """One subplot per metric, one line per run; `extra` metrics go in a second row. Saved as PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [list(metrics), list(extra)] if extra else [list(metrics)]
    widest = max(len(row) for row in rows)
    fig = plt.figure(figsize=(6 * widest if len(rows) == 1 else 5 * widest, 4 * len(rows)))
    grid = fig.add_gridspec(len(rows), math.lcm(*(len(row) for row in rows)))  # each row spans the full width
    plotted = 0
    for r, row in enumerate(rows):
        span = grid.ncols // len(row)
        for c, metric in enumerate(row):
            ax = fig.add_subplot(grid[r, c * span:(c + 1) * span])
            for run_dir in run_dirs:
                steps, values = series(run_dir, metric)
                if len(steps):
                    ax.plot(steps, smooth(values, window), label=run_dir.name)
                    plotted += 1
            ax.set_xlabel("env steps")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize="small")
    if plotted == 0:
        plt.close(fig)
        raise ValueError(f"none of the runs has any of the metrics {[m for row in rows for m in row]}")
    return save_figure(fig, out, title, dpi=120)


def plot_reward_along_episode(frames: np.ndarray, rewards: dict[str, np.ndarray], out: Path, shown: int = 8,
                              title: str | None = None) -> Path:
    """A strip of `shown` evenly spaced frames above the per-step rewards of one episode (one line per named reward,
    each min-max scaled to [0, 1] so rewards of different ranges share the axis; markers at the shown frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    length = len(frames)
    if length == 0 or any(len(values) != length for values in rewards.values()):
        raise ValueError(f"need one reward per frame: {length} frames, rewards {[len(v) for v in rewards.values()]}")
    picks = np.unique(np.linspace(0, length - 1, min(shown, length)).round().astype(int))
    fig = plt.figure(figsize=(2 * len(picks), 5.5))
    grid = fig.add_gridspec(2, len(picks), height_ratios=[1, 1.4])
    for i, step in enumerate(picks):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(frames[step])
        ax.set_title(f"step {step}", fontsize="small")
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    for name, values in rewards.items():
        values = np.asarray(values, dtype=np.float64)
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        line, = ax.plot(scaled, label=f"{name} [{low:.3g}, {high:.3g}]")
        ax.plot(picks, scaled[picks], "o", color=line.get_color())
    ax.set_xlabel("step of the episode")
    ax.set_ylabel("reward (min-max scaled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out, title, dpi=100)


def save_figure(fig: Any, out: Path, title: str | None, dpi: int) -> Path:
    """Title, lay out, write `fig` as PNG at `out` (creating its folder) and free it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
