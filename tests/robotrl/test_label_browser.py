"""End to end in a real browser: a person labels preference queries in the labelling page (headless Debian Chromium
driven by Playwright), and the labels land in the SQLite label store exactly as given.

Skipped only when /usr/bin/chromium or the playwright package is missing (`./run setup` installs both).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from test_offline_queries import random_dataset

from reward_learning.label_store import LabelStore
from reward_learning.segments import Label
from robotrl.offline_queries import buffer_from_dataset, task_layout, write_queries

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ENV_ID, LENGTH, QUERIES, SIZE = "Pendulum-v1", 30, 6, 96

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: `./run setup` installs Debian's chromium and chromium-driver",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[dev]'")
expect = sync_api.expect


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A store with QUERIES pending queries of LENGTH-step windows of a random-action Pendulum dataset that carries
    simulator states, sampled as `robotrl reward queries` does (dataset -> replay buffer -> uniform pairs)."""
    folder = tmp_path_factory.mktemp("labels")
    random_dataset(folder / "pendulum.npz", steps=160)
    buffer = buffer_from_dataset(folder / "pendulum.npz", ENV_ID)
    adapter, names, obs_shape = task_layout(ENV_ID)
    with LabelStore(folder / "labels.sqlite", env_id=ENV_ID, obs_shape=obs_shape, action_dim=adapter.stored_dim,
                    component_names=names, task_description="Keep the pendulum upright") as store:
        write_queries(buffer, store, QUERIES, LENGTH, seed=0, run="browser-test")
    return folder / "labels.sqlite"


@pytest.fixture(scope="module")
def server_url(store_path, tmp_path_factory) -> Iterator[str]:
    from robotrl.labelling.server import LabelServer

    server = LabelServer(store_path, host="127.0.0.1", port=0, cache_dir=tmp_path_factory.mktemp("videos"),
                         width=SIZE, height=SIZE).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def assert_videos_play(page) -> None:
    """Both videos have decoded frames (readyState >= 2, videoWidth > 0) and their playback time moves on."""
    for side in ("left", "right"):
        page.wait_for_function(f"() => {{ const v = document.querySelector('#video-{side}'); "
                               f"return v.readyState >= 2 && v.videoWidth > 0 && !v.error; }}", timeout=20_000)
        t0 = page.eval_on_selector(f"#video-{side}", "v => v.currentTime")
        page.wait_for_function(f"t0 => {{ const v = document.querySelector('#video-{side}'); "
                               f"return v.currentTime !== t0 && !v.paused; }}", arg=t0, timeout=10_000)


def current_query(page) -> int:
    return int(page.inner_text("#query-id").strip())


def answer(page, how: str, expect_next: int | None) -> None:
    """Press a key ('key:d') or click a button ('#btn-left') and wait until query `expect_next` is shown."""
    if how.startswith("key:"):
        page.keyboard.press(how[4:])
    else:
        page.click(how)
    if expect_next is not None:
        expect(page.locator("#query-id")).to_have_text(re.compile(rf"^\s*{expect_next}\s*$"), timeout=20_000)


def test_a_person_labels_queries_in_the_browser(browser, server_url, store_path):
    with LabelStore.open(store_path) as store:
        queries = store.pending_queries("web:alice")
    assert len(queries) == QUERIES
    q = queries
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server_url + "?annotator=alice")
    expect(page.locator("#query-id")).to_have_text(re.compile(rf"^\s*{q[0]}\s*$"), timeout=30_000)
    expect(page.locator("#annotator")).to_have_value("alice")
    expect(page.locator("#task")).to_contain_text("upright")
    expect(page.locator("#progress")).to_contain_text(f"0 labelled · {QUERIES} to go")
    assert_videos_play(page)
    left_src = page.eval_on_selector("#video-left", "v => v.currentSrc")

    answer(page, "#btn-left", q[1])  # q0: left, by click
    assert page.eval_on_selector("#video-left", "v => v.currentSrc") != left_src
    answer(page, "key:ArrowRight", q[2])  # q1: right, by arrow key
    answer(page, "key:w", q[3])  # q2: equal, by key ...
    answer(page, "key:u", q[2])  # ... undone: q2 comes back
    expect(page.locator("#progress")).to_contain_text(f"2 labelled · {QUERIES - 2} to go")
    answer(page, "#btn-right", q[3])  # q2: right instead

    page.reload()  # labels survive a reload, and the page resumes at the first pending query
    expect(page.locator("#query-id")).to_have_text(re.compile(rf"^\s*{q[3]}\s*$"), timeout=30_000)
    expect(page.locator("#annotator")).to_have_value("alice")
    expect(page.locator("#progress")).to_contain_text(f"3 labelled · {QUERIES - 3} to go")
    assert_videos_play(page)

    answer(page, "key:s", q[4])  # q3: skip, by key
    answer(page, "key:a", q[5])  # q4: left, by key ...
    answer(page, "#btn-undo", q[4])  # ... undone by the button
    answer(page, "#btn-equal", q[5])  # q4: equal instead, by click
    answer(page, "key:d", None)  # q5: right, the last one
    expect(page.locator("#progress")).to_contain_text(f"{QUERIES} labelled · 0 to go", timeout=20_000)
    page.close()

    with LabelStore.open(store_path) as store:
        rows = store.labels()
        pairs = store.labelled_pairs(include_skipped=True, labeller="web:alice")
        assert store.pending_queries("web:alice") == []
    with closing(sqlite3.connect(store_path)) as con:
        retracted = {r[0] for r in con.execute("SELECT label FROM retractions")}
    assert {r.labeller for r in rows} == {"web:alice"}
    given = [(r.query_id, r.label) for r in rows]
    assert given == [(q[0], Label.LEFT), (q[1], Label.RIGHT), (q[2], Label.EQUAL), (q[2], Label.RIGHT),
                     (q[3], Label.SKIP), (q[4], Label.LEFT), (q[4], Label.EQUAL), (q[5], Label.RIGHT)]
    assert retracted == {rows[2].id, rows[5].id}  # the two undone answers
    final = dict(zip(pairs.query_ids.tolist(), pairs.labels.tolist(), strict=True))
    assert final == {q[0]: Label.LEFT, q[1]: Label.RIGHT, q[2]: Label.RIGHT, q[3]: Label.SKIP, q[4]: Label.EQUAL,
                     q[5]: Label.RIGHT}
