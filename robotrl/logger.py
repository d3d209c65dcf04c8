"""Run metrics to `metrics.jsonl` (always), TensorBoard (optional) and wandb (optional, offline unless asked)."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

WANDB_INIT_TIMEOUT = 30
METRICS_FILE = "metrics.jsonl"


def to_float(value: Any) -> float:
    """Scalars from tensors, numpy values or numbers."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().cpu().item())
    return float(value)


class MetricsLogger:
    """Appends one JSON line per log call (flushed, so a killed run loses nothing logged before it died)."""

    def __init__(self, run_dir: Path, tensorboard: bool, wandb_cfg: Any | None, config: dict[str, Any],
                 resume_step: int | None = None) -> None:
        """`resume_step`: the step of the checkpoint a resumed run continues from; what was logged after it is
        dropped (None: the run starts at step 0, so every earlier record is)."""
        self.path = run_dir / METRICS_FILE
        kept_until = -1 if resume_step is None else resume_step
        truncate_metrics(self.path, kept_until)
        self.file = self.path.open("a", buffering=1)
        self.start = time.time()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the events of earlier attempts at steps >= purge_step
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=kept_until + 1)
        self.wandb_run = None
        if wandb_cfg is not None and wandb_cfg.mode != "disabled":
            try:
                self.wandb_run = _start_wandb(wandb_cfg, run_dir, config)
            except BaseException:
                self.close()
                raise

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Write finite scalar metrics at env step `step`."""
        values = {k: to_float(v) for k, v in metrics.items()}
        values = {k: v for k, v in values.items() if math.isfinite(v)}
        record = {"step": step, "wall_time": round(time.time() - self.start, 3), **values}
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _start_wandb(cfg: Any, run_dir: Path, config: dict[str, Any]) -> Any:
    """Start wandb. Offline mode never touches the network; online mode (only when asked for) falls back to offline
    after `WANDB_INIT_TIMEOUT` seconds without a server, so a run never hangs on a missing network."""
    try:
        import wandb
    except ImportError:
        raise RuntimeError("logging.wandb.mode is set but wandb is missing: pip install 'robotrl[wandb]'") from None
    os.environ.setdefault("WANDB_SILENT", "true")

    def start(mode: str) -> Any:
        settings = wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT, console="off")
        return wandb.init(project=cfg.project, entity=cfg.entity, mode=mode, dir=str(run_dir), name=run_dir.name,
                          config=config, settings=settings, id=run_dir.name.replace(".", "-"), resume="allow")

    if cfg.mode != "online":
        return start(cfg.mode)
    try:
        return start("online")
    except Exception as err:  # wandb raises its own error types for network and auth failures
        warnings.warn(f"wandb online start failed ({err}); logging to wandb offline in {run_dir} instead "
                      "(upload later with `wandb sync`)", stacklevel=2)
        wandb.teardown()  # the failed attempt still holds the run id in wandb's service process
        return start("offline")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a killed run is skipped)."""
    records = []
    with Path(path).open() as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after `step` (they belong to work lost when the run was killed)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
