"""The labelling web server through Flask's test client (no browser): the next/label/undo flow, tickets, bad input,
access tokens, video serving and caching, stats, a real threaded server, and `robotrl label --stats/--export`."""

from __future__ import annotations

import csv
import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import imageio.v2 as imageio
import pytest
from test_label_videos import LENGTH, WEBM_MAGIC, pendulum_store

from reward_learning.label_store import LabelStore
from robotrl.cli import main
from robotrl.labelling import LabelServer, create_app
from robotrl.labelling.server import TOKEN_HEADER, required_token

SIZE = 64


@pytest.fixture
def store_path(tmp_path) -> Path:
    path = tmp_path / "run" / "labels.sqlite"
    pendulum_store(path).close()
    return path


@pytest.fixture
def make_app(tmp_path):
    """`make_app(store_path, **kwargs)` builds an app with small videos and closes its renderer afterwards."""
    apps = []

    def build(path: Path, **kwargs):
        app = create_app(path, cache_dir=tmp_path / "cache", width=SIZE, height=SIZE, **kwargs)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["robotrl_videos"].close()


@pytest.fixture
def client(store_path, make_app):
    return make_app(store_path).test_client()


def counts(path: Path) -> dict[str, int]:
    with LabelStore.open(path) as store:
        return store.counts()


def label_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT query, label, labeller FROM labels ORDER BY id").fetchall()


def next_query(client, annotator: str = "alice") -> dict:
    response = client.get("/api/next", query_string={"annotator": annotator})
    assert response.status_code == 200, response.json
    return response.json


def answer(client, query: dict, label: str, annotator: str = "alice"):
    return client.post("/api/label", json={"query": query["id"], "label": label, "annotator": annotator,
                                           "ticket": query["ticket"]})


def undo(client, key: str | None, annotator: str = "alice"):
    return client.post("/api/undo", json={"annotator": annotator, "key": key})


def test_next_label_undo_flow_writes_rows(client, store_path):
    first = next_query(client)
    key = first["key"]
    assert first["task"] == "Pendulum-v1" and key
    assert first["progress"] == {"labelled": 0, "total": 3, "pending": 3}
    query = first["query"]
    assert query["id"] == 1 and query["left"] == {"segment": 1, "video": "/videos/1.webm"}
    assert query["right"] == {"segment": 4, "video": "/videos/4.webm"}

    response = answer(client, query, "left")
    assert response.status_code == 201 and isinstance(response.json["label_id"], int)
    assert label_rows(store_path) == [(1, "left", "web:alice")]

    second = next_query(client)
    assert second["query"]["id"] == 2 and second["progress"] == {"labelled": 1, "total": 3, "pending": 2}
    assert second["key"] is None, "the key is handed out once"
    assert next_query(client, "bob")["query"]["id"] == 1, "pending is per annotator"
    assert answer(client, second["query"], "equal").status_code == 201

    undone = undo(client, key)
    assert undone.status_code == 200 and undone.json == {"query": 2, "label": "equal"}
    again = next_query(client)
    assert again["query"]["id"] == 2 and again["progress"]["labelled"] == 1
    assert answer(client, again["query"], "right").status_code == 201
    assert answer(client, next_query(client)["query"], "skip").status_code == 201

    done = next_query(client)
    assert done["query"] is None and done["progress"] == {"labelled": 3, "total": 3, "pending": 0}
    assert [r[:2] for r in label_rows(store_path)] == [(1, "left"), (2, "equal"), (2, "right"), (3, "skip")]
    assert counts(store_path)["retracted"] == 1

    for expected in (3, 2, 1):
        assert undo(client, key).json["query"] == expected
    nothing = undo(client, key)
    assert nothing.status_code == 404 and "nothing to undo" in nothing.json["error"]


def test_replayed_and_duplicate_submissions_are_rejected(client, store_path):
    query = next_query(client)["query"]
    assert answer(client, query, "left").status_code == 201
    before = counts(store_path)
    replay = answer(client, query, "left")
    assert replay.status_code == 409 and "ticket" in replay.json["error"]
    assert counts(store_path) == before

    other = next_query(client, "bob")["query"]
    twin = next_query(client, "bob")["query"]  # a second tab: same query, its own ticket
    assert other["id"] == twin["id"] and other["ticket"] != twin["ticket"]
    assert answer(client, other, "right", "bob").status_code == 201
    before = counts(store_path)
    duplicate = answer(client, twin, "left", "bob")
    assert duplicate.status_code == 409 and "already labelled" in duplicate.json["error"]
    forged = client.post("/api/label", json={"query": 2, "label": "left", "annotator": "bob", "ticket": "made-up"})
    stolen = answer(client, next_query(client, "carol")["query"], "left", "mallory")  # carol's ticket
    assert forged.status_code == stolen.status_code == 409
    assert counts(store_path) == before


def _valid(**changes) -> dict:
    return {"query": 1, "label": "left", "annotator": "alice", "ticket": "filled-in-by-the-test", **changes}


BAD_LABELS = [
    (_valid(label="maybe"), 400),
    (_valid(label="LEFT"), 400),
    (_valid(label=1), 400),
    (_valid(annotator=""), 400),
    (_valid(annotator="   "), 400),
    (_valid(annotator="a" * 65), 400),
    (_valid(annotator="bob<script>"), 400),
    (_valid(annotator="../../etc"), 400),
    (_valid(annotator=None), 400),
    ({k: v for k, v in _valid().items() if k != "annotator"}, 400),
    (_valid(query="1"), 400),
    (_valid(query=True), 400),
    (_valid(ticket=""), 400),
    (_valid(query=999), 404),
    (_valid(query=0), 400),
    (_valid(query=-1), 400),
    (_valid(query=2**63), 400),  # beyond SQLite's integers
    (_valid(query=2**70), 400),
]


@pytest.mark.parametrize(("body", "status"), BAD_LABELS)
def test_bad_labels_get_an_error_status_and_write_nothing(client, store_path, body, status):
    ticket = next_query(client)["query"]["ticket"]
    if body.get("ticket") == "filled-in-by-the-test":
        body = {**body, "ticket": ticket}
    before = counts(store_path)
    response = client.post("/api/label", json=body)
    assert response.status_code == status and response.json["error"]
    assert counts(store_path) == before
    assert answer(client, {"id": 1, "ticket": ticket}, "left").status_code == 201, "the ticket is still valid"


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"data": "query=1&label=left", "content_type": "application/x-www-form-urlencoded"}, 400),
    ({"data": '{"query": 1, "label": "left"}', "content_type": "text/plain"}, 400),
    ({"data": "{not json", "content_type": "application/json"}, 400),
    ({"data": "[1, 2]", "content_type": "application/json"}, 400),
    ({"json": _valid(annotator="x", pad="y" * 5000)}, 413),
])
def test_non_json_and_oversized_bodies_are_rejected(client, store_path, kwargs, status):
    before = counts(store_path)
    for path in ("/api/label", "/api/undo"):
        response = client.post(path, **kwargs)
        assert response.status_code == status, (path, response.json)
    assert counts(store_path) == before


def test_undo_needs_the_annotators_key(client, store_path):
    key = next_query(client)["key"]
    assert answer(client, next_query(client)["query"], "left").status_code == 201
    bobs_key = next_query(client, "bob")["key"]
    for wrong in (None, "", "guess", bobs_key, key + "x"):
        refused = undo(client, wrong)
        assert refused.status_code == 403 and "key" in refused.json["error"]
    assert undo(client, key, "carol").status_code == 403, "no key was issued for carol"
    assert counts(store_path)["retracted"] == 0
    assert undo(client, key).json == {"query": 1, "label": "left"}
    assert counts(store_path)["retracted"] == 1


def test_bad_annotator_on_next_and_undo(client, store_path):
    assert client.get("/api/next").status_code == 400
    assert client.get("/api/next", query_string={"annotator": "eve;drop"}).status_code == 400
    assert client.post("/api/undo", json={"annotator": "x" * 65}).status_code == 400
    assert client.post("/api/undo", json={}).status_code == 400


@pytest.mark.parametrize("url", [
    "/videos/..%2F..%2Fetc%2Fpasswd",
    "/videos/../labels.sqlite",
    "/videos/%2e%2e%2flabels.sqlite",
    "/videos/..%5Clabels.sqlite",
    "/videos/1.mp4",
    "/videos/1.webm.tmp",
    "/videos/-1.webm",
    "/videos/segment-1.webm",
    "/videos/999.webm",
    "/videos/",
])
def test_video_urls_other_than_known_segment_ids_are_404(client, url):
    assert client.get(url).status_code == 404


def test_video_endpoint_serves_a_cached_webm(client, tmp_path):
    response = client.get("/videos/6.webm")
    assert response.status_code == 200 and response.mimetype == "video/webm"
    data = response.get_data()
    assert data[:4] == WEBM_MAGIC
    (tmp_path / "got.webm").write_bytes(data)
    with imageio.get_reader(tmp_path / "got.webm", format="FFMPEG") as reader:
        assert sum(1 for _ in reader) == LENGTH
    videos = client.application.extensions["robotrl_videos"]
    cached = videos.cached_path(6)
    stamp = cached.stat().st_mtime_ns
    assert client.get("/videos/6.webm").get_data() == data
    partial = client.get("/videos/6.webm", headers={"Range": "bytes=0-3"})  # browsers stream videos in ranges
    assert partial.status_code == 206 and partial.get_data() == WEBM_MAGIC
    assert videos.renders == 1 and cached.stat().st_mtime_ns == stamp


def test_next_prefetches_the_videos_of_upcoming_queries(client):
    next_query(client)  # 3 pending queries: their 6 segments are queued for rendering
    videos = client.application.extensions["robotrl_videos"]
    deadline = time.monotonic() + 20
    while not all(videos.cached_path(i).exists() for i in range(1, 7)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(videos.cached_path(i).exists() for i in range(1, 7)) and videos.renders == 6


def test_store_without_states_explains_why_videos_are_missing(tmp_path, make_app):
    path = tmp_path / "old.sqlite"
    pendulum_store(path, with_state=False).close()
    response = make_app(path).test_client().get("/videos/1.webm")
    assert response.status_code == 409 and "simulator states" in response.json["error"]


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for element in ("task", "video-left", "video-right", "btn-left", "btn-right", "btn-equal", "btn-skip", "btn-undo",
                    "annotator", "progress", "status", "query-id"):
        assert f'id="{element}"' in html
    assert "http" not in html.replace('name="viewport"', ""), "no external resources"
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


def test_a_token_guards_every_route(store_path, make_app):
    app = make_app(store_path, token="s3cret-token")
    anonymous = app.test_client()
    for url in ("/", "/static/app.js", "/api/next?annotator=alice", "/api/stats", "/videos/1.webm"):
        assert anonymous.get(url).status_code == 401, url
        assert anonymous.get(url, headers={TOKEN_HEADER: "wrong"}).status_code == 401, url
        assert anonymous.get(url, headers={TOKEN_HEADER: "s3cret-tokén"}).status_code == 401, url
    assert anonymous.post("/api/undo", json={"annotator": "alice"}).status_code == 401
    assert counts(store_path)["labels"] == 0

    with_header = app.test_client()
    query = with_header.get("/api/next?annotator=alice", headers={TOKEN_HEADER: "s3cret-token"}).json["query"]
    labelled = with_header.post("/api/label", headers={TOKEN_HEADER: "s3cret-token"},
                                json={"query": query["id"], "label": "right", "annotator": "alice",
                                      "ticket": query["ticket"]})
    assert labelled.status_code == 201

    browser = app.test_client()
    assert browser.get("/?token=s3cret-token").status_code == 200  # sets the cookie <video src> relies on
    assert browser.get("/api/next?annotator=alice").status_code == 200
    assert browser.get("/videos/1.webm").status_code == 200


def test_without_token_only_loopback_hosts_are_answered(client):
    assert client.get("/api/stats", base_url="http://127.0.0.1:8765").status_code == 200
    assert client.get("/api/stats", base_url="http://evil.example:8765").status_code == 400  # DNS rebinding


@pytest.mark.parametrize(("host", "status"), [
    ("[::1]", 200), ("[::1]:8765", 200), ("LOCALHOST:8765", 200), ("127.0.0.2", 200),
    ("[::2]:8765", 400), ("[::1]evil:80", 400), ("localhost.evil.com", 400), ("::1:8765", 400), ("", 400),
])
def test_ipv6_loopback_and_other_host_headers(client, host, status):
    assert client.get("/api/stats", headers={"Host": host}).status_code == status


def test_other_hosts_require_a_token():
    assert required_token("127.0.0.1", None) is None and required_token("localhost", None) is None
    assert required_token("::1", None) is None
    generated = required_token("0.0.0.0", None)
    assert generated and len(generated) >= 32 and generated != required_token("0.0.0.0", None)
    assert required_token("192.168.1.5", "mine") == "mine"
    assert required_token("127.0.0.1", "mine") == "mine"


def test_stats_report_annotators_and_agreement(client):
    for annotator, labels in (("alice", ["left", "right", "skip"]), ("bob", ["left", "left", "equal"])):
        for kind in labels:
            assert answer(client, next_query(client, annotator)["query"], kind, annotator).status_code == 201
    stats = client.get("/api/stats").json
    assert stats["annotators"]["web:alice"] == {"labels": 3, "left": 1, "right": 1, "equal": 0, "skip": 1}
    assert stats["annotators"]["web:bob"]["left"] == 2
    (pair,) = stats["pairs"]
    assert (pair["a"], pair["b"], pair["shared"], pair["agreement"]) == ("web:alice", "web:bob", 2, 0.5)


def test_label_server_runs_in_a_thread_on_a_free_port(store_path, tmp_path):
    server = LabelServer(store_path, port=0, cache_dir=tmp_path / "cache", width=SIZE, height=SIZE).start()
    try:
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}/"
        with urllib.request.urlopen(server.url, timeout=10) as page:
            assert b'id="video-left"' in page.read()
        with urllib.request.urlopen(server.url + "api/next?annotator=alice", timeout=10) as response:
            query = json.load(response)["query"]
        body = json.dumps({"query": query["id"], "label": "left", "annotator": "alice", "ticket": query["ticket"]})
        request = urllib.request.Request(server.url + "api/label", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
    finally:
        server.stop()
    assert label_rows(store_path) == [(1, "left", "web:alice")]


def test_label_server_with_a_token_enforces_it_on_loopback_too(store_path, tmp_path):
    with pytest.raises(ValueError, match="must not be empty"):
        LabelServer(store_path, port=0, token="", cache_dir=tmp_path / "cache")
    with LabelServer(store_path, port=0, token="a b/c", cache_dir=tmp_path / "cache") as server:
        assert server.url.endswith("/?token=a%20b%2Fc")
        with urllib.request.urlopen(server.url, timeout=10) as page:
            assert page.status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(server.url.split("?")[0] + "api/stats", timeout=10)
        assert denied.value.code == 401


def test_cli_stats_and_export(store_path, client, tmp_path, capsys):
    for annotator, kind in (("alice", "left"), ("bob", "right")):
        assert answer(client, next_query(client, annotator)["query"], kind, annotator).status_code == 201
    run_dir = store_path.parent
    assert main(["label", str(run_dir), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "web:alice" in out and "web:bob" in out and "kappa" in out

    assert main(["label", str(store_path), "--export", str(tmp_path / "labels.csv")]) == 0
    with (tmp_path / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["label"]]  # pending queries follow with empty label fields
    assert [(r["query_id"], r["label"], r["labeller"]) for r in rows] == [("1", "left", "web:alice"),
                                                                           ("1", "right", "web:bob")]
    assert rows[0]["left_segment"] == "1" and rows[0]["right_length"] == str(LENGTH)
    assert main(["label", str(run_dir), "--export", str(tmp_path / "out" / "labels.json")]) == 0
    exported = json.loads((tmp_path / "out" / "labels.json").read_text())["rows"]
    assert [r["labeller"] for r in exported if r["label"]] == ["web:alice", "web:bob"]

    capsys.readouterr()
    assert main(["label", str(run_dir), "--export", str(tmp_path / "labels.txt")]) == 2
    assert main(["label", str(tmp_path / "missing"), "--stats"]) == 2
    assert "no label store" in capsys.readouterr().err


def test_a_killed_server_loses_no_confirmed_label(store_path, tmp_path):
    """`robotrl label` in its own process, SIGKILLed right after answering: every 201 is in the store."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "label", str(store_path), "--port", str(port),
                               "--width", "64", "--height", "64"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # wait until it listens
            try:
                urllib.request.urlopen(base + "/api/stats", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        confirmed = []
        for label in ("left", "right", "equal"):
            with urllib.request.urlopen(base + "/api/next?annotator=kim", timeout=10) as response:
                query = json.load(response)["query"]
            body = json.dumps({"query": query["id"], "label": label, "annotator": "kim", "ticket": query["ticket"]})
            request = urllib.request.Request(base + "/api/label", body.encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
            confirmed.append((query["id"], label, "web:kim"))
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    assert label_rows(store_path) == confirmed
