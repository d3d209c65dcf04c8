"""Deterministic evaluation episodes and mp4 videos (headless)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import envs
from robotrl.agents.base import Agent
from robotrl.spaces import ActionAdapter


@dataclass
class EvalResult:
    """Per-episode returns (env reward), lengths, success flags, reward-component totals and the video files written.
    `has_success`: the env reports ``info["success"]``, so the success rate is logged even when it is 0."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool]
    videos: list[Path] = field(default_factory=list)
    has_success: bool = False
    component_totals: list[dict[str, float]] = field(default_factory=list)  # per episode: name -> sum of raw values

    def summary(self) -> dict[str, float]:
        """Means over episodes. Per reward component: ``eval/components/<name>``, the episode's sum of raw values
        (for an event flagged once, such as a crash that ends the episode, the share of episodes with the event), and
        ``eval/components_per_step/<name>``, that sum over the episode's length (e.g. the mean speed)."""
        out = {"eval/return": float(np.mean(self.returns)), "eval/return_std": float(np.std(self.returns)),
               "eval/length": float(np.mean(self.lengths))}
        if self.has_success or any(self.successes):
            out["eval/success_rate"] = float(np.mean(self.successes))
        for name in self.component_totals[0] if self.component_totals else ():
            totals = np.array([episode[name] for episode in self.component_totals])
            out[f"eval/components/{name}"] = float(totals.mean())
            out[f"eval/components_per_step/{name}"] = float(np.mean(totals / np.array(self.lengths)))
        return out


@torch.no_grad()
def evaluate(
    agent: Agent, env: object, adapter: ActionAdapter, episodes: int, seed: int, device: torch.device,
    video_dir: Path | None = None, fps: int = 30, deterministic: bool = True,
) -> EvalResult:
    """Run `episodes` episodes of `agent` on a single (non-vector) env; write one mp4 per episode if `video_dir`."""
    result = EvalResult([], [], [])
    was_training = agent.training
    agent.eval()
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            frames = [env.render()] if video_dir is not None else None
            done, total, length, success = False, 0.0, 0, False
            components: dict[str, float] = {}
            while not done:
                obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device).unsqueeze(0)
                action = agent.act(obs_t, deterministic=deterministic)[0].cpu().numpy()
                obs, reward, terminated, truncated, info = env.step(adapter.to_env(action))
                total += float(reward)
                length += 1
                success = success or bool(info.get("success", False))
                for name, value in info.get("reward_components", {}).items():
                    components[name] = components.get(name, 0.0) + float(value)
                done = terminated or truncated
                if frames is not None:
                    frames.append(env.render())
            result.returns.append(total)
            result.lengths.append(length)
            result.successes.append(success)
            result.component_totals.append(components)
            result.has_success = result.has_success or "success" in info
            if video_dir is not None and frames is not None:
                result.videos.append(write_video(frames, video_dir / f"episode-{episode:03d}.mp4", fps))
    finally:
        agent.train(was_training)
    return result


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """Encode RGB frames to H.264 mp4 with the ffmpeg that imageio-ffmpeg ships (no display or system ffmpeg)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    pad = (height % 2, width % 2)  # libx264 needs even sizes
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1,
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            if any(pad):
                frame = np.pad(frame, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
            writer.append_data(np.ascontiguousarray(frame, dtype=np.uint8))
    return path


def make_eval_env(env_id: str, kwargs: dict, video: bool, width: int, height: int, camera: str | int | None,
                  max_episode_steps: int | None = None) -> object:
    """A single env for evaluation, rendering RGB arrays headless when a video is wanted."""
    extra = {"render_mode": "rgb_array", "width": width, "height": height, "camera": camera} if video else {}
    return envs.make(env_id, max_episode_steps=max_episode_steps, **extra, **kwargs)
