"""Headless rendering helpers: GL backend choice, GL failure messages, and frame resizing in numpy."""

from __future__ import annotations

import os
import traceback
from typing import Any

import numpy as np

# Where GL platform failures surface: PyOpenGL and MuJoCo's per-backend context modules.
_GL_MODULE_PATHS = ("/OpenGL/", "/mujoco/egl/", "/mujoco/osmesa/", "/mujoco/glfw/", "/mujoco/gl_context")
_GL_MARKERS = ("opengl", "egl", "osmesa", "glfw", "glx", "gl platform", "gl context", "display")


def configure_headless_gl() -> str:
    """Default MuJoCo to EGL, with PyOpenGL and SDL set to match; explicit user settings win. Returns the backend.

    Must run before mujoco (or PyOpenGL) is imported: both read the variables at import time.
    """
    backend = os.environ.setdefault("MUJOCO_GL", "egl")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return backend


def is_gl_error(error: BaseException) -> bool:
    """Whether an exception (or one it was raised from) comes from a missing or broken OpenGL platform."""
    seen: BaseException | None = error
    while seen is not None:
        text = f"{type(seen).__module__} {type(seen).__name__} {seen}".lower()
        if any(marker in text for marker in _GL_MARKERS):
            return True
        frames = traceback.extract_tb(seen.__traceback__)
        if any(marker in frame.filename.replace("\\", "/") for frame in frames for marker in _GL_MODULE_PATHS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def gl_failure(error: BaseException, doing: str = "render") -> RuntimeError:
    """A RuntimeError telling the user how to get headless GL working."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    return RuntimeError(
        f"MuJoCo could not {doing}: no usable OpenGL platform (MUJOCO_GL={backend}; original error: "
        f"{type(error).__name__}: {error}). Headless rendering needs MUJOCO_GL=egl (Mesa's libegl1 + libegl-mesa0) or "
        "MUJOCO_GL=osmesa (apt-get install libosmesa6), set in the environment before mujoco is imported."
    )


def fast_rendering(env: Any) -> None:
    """Cheaper MuJoCo frames for previews (no multisampling, 1024-pixel shadow maps): about 5x faster in software
    GL, nearly the same picture. Call before the env's first `render()`; a no-op for non-MuJoCo envs."""
    model = getattr(env.unwrapped, "model", None)
    quality = getattr(getattr(model, "vis", None), "quality", None)
    if quality is not None:
        quality.offsamples = 0
        quality.shadowsize = min(int(quality.shadowsize), 1024)


def resize_frame(frame: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    """Bilinear resize of an HxWxC uint8 frame; a None side keeps the aspect ratio of the other."""
    in_h, in_w = frame.shape[:2]
    if height is None and width is None:
        return frame
    if height is None:
        height = max(1, round(in_h * width / in_w))
    if width is None:
        width = max(1, round(in_w * height / in_h))
    if (height, width) == (in_h, in_w):
        return frame
    # Sample at pixel centres, clamped to the image, and blend the four neighbours.
    ys = np.clip((np.arange(height) + 0.5) * (in_h / height) - 0.5, 0, in_h - 1)
    xs = np.clip((np.arange(width) + 0.5) * (in_w / width) - 0.5, 0, in_w - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    pixels = frame.astype(np.float32)
    top = pixels[y0][:, x0] * (1 - wx) + pixels[y0][:, x1] * wx
    bottom = pixels[y1][:, x0] * (1 - wx) + pixels[y1][:, x1] * wx
    blended = top * (1 - wy) + bottom * wy
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
