"""A screenshot of the labelling page for the docs: HalfCheetah-v5 segments from a short random rollout, served by
`LabelServer` and shown in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) with both videos
playing, after one query has been answered. The videos use the server's default camera, which for HalfCheetah-v5 is
"track" (it follows the cheetah), and the library's default (fast) GL quality.

    python benchmarks/label_page_screenshot.py --out docs/labelling.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from label_latency import build_store
from playwright.sync_api import expect, sync_playwright

from robotrl.labelling.server import LabelServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TASK = "HalfCheetah: prefer the segment where the cheetah runs forward (to the right) faster, without flipping over."
PLAYING = """() => [...document.querySelectorAll('video')].every(
    v => v.readyState >= 2 && v.videoWidth > 0 && !v.paused && v.currentTime > 0.8)"""


def screenshot(out: Path, width: int = 1280, height: int = 720, queries: int = 4,
               camera: str | None = None) -> Path:
    """Build a store, serve it, answer the first query with a key and save a screenshot of the second to `out`.
    `camera`: the MuJoCo camera the videos are rendered with (None: the server's default)."""
    with tempfile.TemporaryDirectory(prefix="label-page-") as tmp:
        store = build_store(Path(tmp) / "labels.sqlite", "HalfCheetah-v5", queries, seed=1, task=TASK)
        with LabelServer(store, port=0, cache_dir=Path(tmp) / "videos", width=480, height=360,
                         camera=camera) as server, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(server.url + "?annotator=alice")
            page.wait_for_function(PLAYING, timeout=120_000)
            first = page.inner_text("#query-id")
            page.keyboard.press("d")
            expect(page.locator("#query-id")).not_to_have_text(first, timeout=120_000)
            page.wait_for_function(PLAYING, timeout=120_000)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "labelling.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--camera", default=None, help="MuJoCo camera for the videos (default: the server's, "
                                                         "track for HalfCheetah-v5)")
    args = parser.parse_args()
    print(f"wrote {screenshot(args.out, args.width, args.height, camera=args.camera)}")


if __name__ == "__main__":
    main()
