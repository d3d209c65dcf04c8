"""Learning-curve plots from one or more runs' metrics.jsonl files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robotrl.logger import read_metrics


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


def plot_runs(run_dirs: list[Path], metrics: list[str], out: Path, window: int = 1, title: str | None = None) -> Path:
    """One subplot per metric, one line per run; saved as PNG at `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    plotted = 0
    for ax, metric in zip(axes[0], metrics, strict=True):
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
        raise ValueError(f"none of the runs has any of the metrics {metrics}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
