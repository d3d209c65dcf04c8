"""Scenes that look more like photos, for vision-language rewards (VLM-RM renders a textured humanoid, and its
MountainCar reward is only well shaped with textured rendering).

- `textured/Humanoid-v5`: gymnasium's Humanoid with our assets (`envs/assets/textured_scene.xml`: light sky, grass-like
  checker floor without reflections, light grey body) merged into its MJCF, and VLM-RM's camera (tracking the torso
  from 3.5 m, 10 degrees down, from the front). For VLM-RM's setting also pass `terminate_when_unhealthy=False` and a
  fixed `max_episode_steps` (100).
- `textured/CartPole-v1`, `textured/MountainCarContinuous-v0`: the pygame frames with the white background replaced
  by a sky gradient above the ground line (the track; the hill curve) and a checker ground below it.

The dynamics, observations and reward components are those of the base ids.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from envs.registry import get_env_spec, register

ASSETS = Path(__file__).with_name("assets")
SCENE_ASSETS = ASSETS / "textured_scene.xml"
VLM_RM_CAMERA = {"trackbodyid": 1, "distance": 3.5, "lookat": (0.0, 0.0, 1.0), "elevation": -10.0, "azimuth": 180.0}
"""VLM-RM's Humanoid camera (its `kube/job.yaml` settings)."""


def textured_model(source: Path, scene: Path = SCENE_ASSETS) -> Path:
    """An MJCF file: `source` with `scene`'s assets merged in (skybox replaced, floor and default geom materials set).

    Written once to a cache directory named by the content hash (atomically, so parallel workers can race safely)."""
    model_text, scene_text = source.read_text(), scene.read_text()
    digest = hashlib.sha256((model_text + scene_text).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "robotrl-scenes" / f"{source.stem}-textured-{digest}.xml"
    if out.exists():
        return out
    root = ET.fromstring(model_text)
    asset = root.find("asset")
    if asset is None:
        asset = ET.SubElement(root, "asset")
    for texture in asset.findall("texture"):
        if texture.get("type") == "skybox":
            asset.remove(texture)
    for item in ET.fromstring(scene_text).find("asset"):
        asset.append(copy.deepcopy(item))
    for geom in root.iter("geom"):
        if geom.get("name") == "floor":
            geom.set("material", "robotrl_floor")
            geom.attrib.pop("rgba", None)
    default_geom = root.find("default/geom")
    if default_geom is not None:
        default_geom.set("material", "robotrl_body")
        default_geom.attrib.pop("rgba", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(ET.tostring(root, encoding="unicode"))
    partial.replace(out)
    return out


def _gymnasium_asset(name: str) -> Path:
    """Path of one of gymnasium's bundled MuJoCo model files."""
    import gymnasium.envs.mujoco as gym_mujoco

    return Path(gym_mujoco.__file__).with_name("assets") / name


@dataclass(frozen=True)
class TexturedMujoco:
    """Builds a registered MuJoCo id on our textured model, with a camera config (picklable for async workers)."""

    base_id: str
    asset: str
    camera_config: tuple[tuple[str, Any], ...]

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None,
                 camera: str | int | None, max_episode_steps: int | None, **kwargs: Any) -> gym.Env:
        kwargs.setdefault("xml_file", str(textured_model(_gymnasium_asset(self.asset))))
        kwargs.setdefault("default_camera_config", {k: np.asarray(v) if isinstance(v, tuple) else v
                                                    for k, v in self.camera_config})
        return get_env_spec(self.base_id).constructor(render_mode=render_mode, width=width, height=height,
                                                      camera=camera, max_episode_steps=max_episode_steps, **kwargs)


def checker(height: int, width: int, square: int, dark: tuple[int, int, int], light: tuple[int, int, int]
            ) -> np.ndarray:
    """An HxWx3 uint8 checkerboard of `square`-pixel squares."""
    rows = (np.arange(height) // square)[:, None]
    cols = (np.arange(width) // square)[None, :]
    return np.where(((rows + cols) % 2 == 0)[..., None], np.array(dark, np.uint8), np.array(light, np.uint8))


def sky_gradient(height: int, width: int) -> np.ndarray:
    """An HxWx3 uint8 vertical gradient from sky blue (top) to near white (horizon)."""
    top, horizon = np.array([135, 184, 235], np.float32), np.array([236, 242, 250], np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((top * (1 - t) + horizon * t).astype(np.uint8), (height, width, 3))


class TexturedBackground(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replaces the pure-white background of a classic-control frame by sky above and checker ground below the
    ground line (`ground`: "track" for CartPole, "hill" for MountainCar).

    Frames are resized to `size` (height, width; if both are given) before compositing, with Pillow's
    bilinear filter (~2 ms for 600x400 -> 224x224, 8x faster than numpy): compositing and resizing the native frame
    would cost several times the render itself."""

    def __init__(self, env: gym.Env, ground: str, size: tuple[int | None, int | None] = (None, None)) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, ground=ground, size=size)  # so env.spec can rebuild the stack
        super().__init__(env)
        self.ground = ground
        self.size = size
        self._background: np.ndarray | None = None

    def _ground_rows(self, height: int, width: int) -> np.ndarray:
        """The first ground row of each image column."""
        inner = self.env.unwrapped
        if self.ground == "track":  # CartPole draws its track 100 px above the bottom of a 400 px screen
            return np.full(width, round(height * (1 - 100 / inner.screen_height)))
        span = inner.max_position - inner.min_position  # MountainCar: the hill curve, flipped to image rows
        positions = inner.min_position + (np.arange(width) + 0.5) * span / width
        return np.round(height * (1 - inner._height(positions) * inner.screen_width / span / inner.screen_height))

    def render(self) -> np.ndarray:
        frame = self.env.render()
        if None not in self.size:  # with one side given, `envs.make` resizes afterwards (keeping the aspect ratio)
            frame = np.asarray(Image.fromarray(frame).resize(self.size[::-1], Image.Resampling.BILINEAR))
        height, width = frame.shape[:2]
        if self._background is None or self._background.shape[:2] != (height, width):
            below = np.arange(height)[:, None] >= self._ground_rows(height, width)[None, :]
            ground = checker(height, width, max(4, width // 30), (96, 140, 80), (118, 166, 96))
            self._background = np.where(below[..., None], ground, sky_gradient(height, width))
        white = (frame == 255).all(-1, keepdims=True)
        return np.where(white, self._background, frame)


@dataclass(frozen=True)
class TexturedClassic:
    """Builds a registered classic-control id with `TexturedBackground` frames (picklable for async workers)."""

    base_id: str
    ground: str

    def __call__(self, *, render_mode: str | None, width: int | None, height: int | None,
                 camera: str | int | None, max_episode_steps: int | None, **kwargs: Any) -> gym.Env:
        env = get_env_spec(self.base_id).constructor(render_mode=render_mode, width=width, height=height,
                                                     camera=camera, max_episode_steps=max_episode_steps, **kwargs)
        return TexturedBackground(env, self.ground, (height, width))


@dataclass(frozen=True)
class BaseTerms:
    """The reward terms of the base id, looked up when an env is built (picklable)."""

    base_id: str

    def __call__(self, env: gym.Env) -> Any:
        return get_env_spec(self.base_id).reward_terms(env)


def register_vlm_scenes() -> None:
    """Register the textured ids (idempotent; after the gymnasium ids they build on)."""
    camera = tuple(VLM_RM_CAMERA.items())
    scenes = {
        "textured/Humanoid-v5": (TexturedMujoco("Humanoid-v5", "humanoid.xml", camera), False,
                                 "Humanoid-v5 on a textured floor under a sky, VLM-RM's camera"),
        "textured/CartPole-v1": (TexturedClassic("CartPole-v1", "track"), True,
                                 "CartPole-v1 with sky and checker ground in its frames"),
        "textured/MountainCarContinuous-v0": (TexturedClassic("MountainCarContinuous-v0", "hill"), True,
                                              "MountainCarContinuous-v0 with sky and checker ground in its frames"),
    }
    for env_id, (constructor, resize, description) in scenes.items():
        base = env_id.split("/", 1)[1]
        register(env_id, constructor, BaseTerms(base), family="vlm_scenes", description=description,
                 resize_frames=resize, overwrite=True)
