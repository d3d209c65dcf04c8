"""The labelling web server: a small Flask app that shows queries of a label store and writes people's answers to it.

Each label is one committed SQLite transaction before the server answers 201, so a crash loses nothing that was
confirmed. `/api/next` hands out a one-time ticket per (annotator, query) that `/api/label` must present: together with
`LabelStore.add_label_once` this turns replayed or double submissions into 409s that write nothing. The first
`/api/next` for an annotator name since the server started also returns that name's secret key, which `/api/undo`
requires (the page keeps it in sessionStorage), so no one else can retract their labels.

Security: the server binds 127.0.0.1 by default and then only answers requests addressed to a loopback name or
address such as `localhost`, `127.0.0.1` or `[::1]` (against DNS rebinding). Binding any other address requires an
access token (generated when not given) that every request must carry: `?token=` on the first page load (which sets a
cookie, so `<video src>` works), then the `X-Robotrl-Token` header or the cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import re
import secrets
import signal
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from reward_learning.label_store import DuplicateLabel, LabelStore
from robotrl.labelling.videos import SegmentVideos, VideoUnavailable

TOKEN_HEADER = "X-Robotrl-Token"
TOKEN_COOKIE = "robotrl_label_token"
LABELS = ("left", "right", "equal", "skip")
ANNOTATOR_PATTERN = re.compile(r"[A-Za-z0-9 _.@-]{1,64}")
VIDEO_NAME = re.compile(r"(\d{1,18})\.webm")
PREFETCH_QUERIES = 4  # queries whose videos are rendered ahead of the annotator
MAX_TICKETS = 4096  # outstanding tickets kept; the oldest are forgotten first
HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+)(?::\d{1,5})?")  # host, or [IPv6 address], and a port
MAX_QUERY_ID = 2**63  # SQLite integers are signed 64-bit
STATIC_DIR = Path(str(files("robotrl.labelling") / "static"))


class ApiError(HTTPException):
    """A request the API rejects with a status and a message for the page (and nothing written)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Tickets:
    """One-time tickets binding a submission to the (annotator, query) that `/api/next` showed."""

    def __init__(self, limit: int = MAX_TICKETS) -> None:
        self._lock = threading.Lock()
        self._issued: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._limit = limit

    def issue(self, annotator: str, query_id: int) -> str:
        """A new random ticket for `annotator` to answer `query_id`."""
        ticket = secrets.token_urlsafe(16)
        with self._lock:
            self._issued[ticket] = (annotator, query_id)
            while len(self._issued) > self._limit:
                self._issued.popitem(last=False)
        return ticket

    def redeem(self, ticket: str, annotator: str, query_id: int) -> bool:
        """Use up `ticket` if it was issued for exactly this annotator and query; False if unknown or used."""
        with self._lock:
            if self._issued.get(ticket) != (annotator, query_id):
                return False
            del self._issued[ticket]
            return True

    def restore(self, ticket: str, annotator: str, query_id: int) -> None:
        """Give a redeemed ticket back when its submission failed for a reason the annotator can retry."""
        with self._lock:
            self._issued[ticket] = (annotator, query_id)


class AnnotatorKeys:
    """One secret key per annotator name, handed to whoever asks first for that name since the server started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}

    def claim(self, annotator: str) -> str | None:
        """A new key for `annotator` if none was issued yet, else None (the key is never shown twice)."""
        with self._lock:
            if annotator in self._keys:
                return None
            key = self._keys[annotator] = secrets.token_urlsafe(16)
            return key

    def check(self, annotator: str, key: Any) -> bool:
        """Whether `key` is the one issued for `annotator`."""
        with self._lock:
            expected = self._keys.get(annotator)
        return expected is not None and isinstance(key, str) and hmac.compare_digest(key.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (so no one else can reach a server bound to it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def required_token(host: str, token: str | None) -> str | None:
    """The access token a server bound to `host` requires: `token` if given, else a new random one unless `host` is
    loopback (only this machine can connect there)."""
    if token is None and not is_loopback(host):
        return secrets.token_urlsafe(24)
    return token


def create_app(store_path: str | Path, *, cache_dir: str | Path | None = None, token: str | None = None,
               max_body: int = 4096, width: int = 320, height: int = 240, fps: int = 25,
               camera: str | int | None = None) -> Flask:
    """The labelling app for the label store at `store_path`; videos are cached in `cache_dir` (default:
    `label_videos/` next to the store). With `token`, every request must carry it; without, only requests addressed
    to a loopback host name are answered. `app.extensions["robotrl_videos"]` is the `SegmentVideos` to close."""
    if token == "":
        raise ValueError("the access token must not be empty: leave it out, or pass a long random one")
    store_path = Path(store_path)
    with LabelStore.open(store_path):  # fail now, with the store's own message, if it is missing or not a store
        pass
    videos = SegmentVideos(store_path, cache_dir if cache_dir is not None else store_path.parent / "label_videos",
                           width=width, height=height, fps=fps, camera=camera)
    tickets = Tickets()
    keys = AnnotatorKeys()
    expected_token = None if token is None else token.encode()

    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=max_body)
    app.extensions["robotrl_videos"] = videos

    @contextmanager
    def opened_store() -> Iterator[LabelStore]:
        """A store connection for this request (connections are single-thread; WAL lets the trainer write too)."""
        store = LabelStore.open(store_path)
        try:
            yield store
        finally:
            store.close()

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        return jsonify(error=error.description), error.code or 500

    @app.before_request
    def check_access() -> None:
        if expected_token is None:
            host = HOST_HEADER.fullmatch(request.headers.get("Host", ""))
            if host is None or not is_loopback(host.group(1).lower()):
                raise ApiError(400, "without an access token the server only answers requests addressed to "
                                    "localhost or a loopback address")
            return
        given = request.headers.get(TOKEN_HEADER) or request.args.get("token") or request.cookies.get(TOKEN_COOKIE)
        if not given or not hmac.compare_digest(given.encode(), expected_token):
            raise ApiError(401, "access token missing or wrong: open the URL that `robotrl label` printed "
                                  "(it ends in ?token=...)")

    @app.after_request
    def harden(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; object-src 'none'; "
                                                       "frame-ancestors 'none'; base-uri 'none'")
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page() -> Response:
        response = app.send_static_file("index.html")
        response.headers["Cache-Control"] = "no-store"
        if token is not None:  # only reached with a valid token: remember it for <video src> and reloads
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    @app.get("/api/next")
    def next_query() -> Response:
        annotator = parse_annotator(request.args.get("annotator"))
        with opened_store() as store:
            pending = store.pending_queries(f"web:{annotator}")
            total = store.counts()["queries"]
            task = store.meta.get("task_description") or store.env_id
            upcoming = store.query_segments(pending[:PREFETCH_QUERIES])
        query = None
        if pending:
            left, right = upcoming[0]
            query = {"id": pending[0], "ticket": tickets.issue(annotator, pending[0]),
                     "left": {"segment": left, "video": f"/videos/{left}.webm"},
                     "right": {"segment": right, "video": f"/videos/{right}.webm"}}
        videos.prefetch([segment for pair in upcoming for segment in pair])
        return jsonify(query=query, task=task, key=keys.claim(annotator),
                       progress={"labelled": total - len(pending), "total": total, "pending": len(pending)})

    @app.post("/api/label")
    def label() -> tuple[Response, int]:
        body = json_body()
        annotator = parse_annotator(body.get("annotator"))
        kind = body.get("label")
        if kind not in LABELS:
            raise ApiError(400, f"label must be one of {', '.join(LABELS)}, got {kind!r}")
        query_id, ticket = body.get("query"), body.get("ticket")
        if not isinstance(query_id, int) or isinstance(query_id, bool) or not 0 < query_id < MAX_QUERY_ID:
            raise ApiError(400, f"query must be a query id (a positive 64-bit integer), got {query_id!r}")
        if not isinstance(ticket, str) or not ticket:
            raise ApiError(400, "ticket missing: ask /api/next for the query to label")
        with opened_store() as store:
            try:
                store.query_info(query_id)
            except ValueError as error:
                raise ApiError(404, str(error)) from error
            if not tickets.redeem(ticket, annotator, query_id):
                raise ApiError(409, f"ticket unknown or already used for query {query_id}: load the next query")
            try:
                label_id = store.add_label_once(query_id, kind, f"web:{annotator}")
            except DuplicateLabel as error:
                raise ApiError(409, str(error)) from error
            except BaseException:
                tickets.restore(ticket, annotator, query_id)
                raise
        return jsonify(label_id=label_id), 201

    @app.post("/api/undo")
    def undo() -> Response:
        body = json_body()
        annotator = parse_annotator(body.get("annotator"))
        if not keys.check(annotator, body.get("key")):
            raise ApiError(403, f"undo needs {annotator}'s key, which the page that first asked for {annotator}'s "
                                f"queries since the server started received: undo from that page")
        with opened_store() as store:
            record = store.retract_last(f"web:{annotator}")
        if record is None:
            raise ApiError(404, f"nothing to undo: {annotator} has no labels left")
        return jsonify(query=record.query_id, label=record.label.name.lower())

    @app.get("/api/stats")
    def stats() -> Response:
        with opened_store() as store:
            summary = store.annotator_summary()
        for pair in summary["pairs"]:  # no shared answers gives NaN, which is not JSON
            pair.update({k: None for k in ("agreement", "kappa") if math.isnan(pair[k])})
        return jsonify(summary)

    @app.get("/videos/<name>")
    def video(name: str) -> Response:
        match = VIDEO_NAME.fullmatch(name)
        if match is None:
            raise ApiError(404, "no such video")
        try:
            path = videos.path(int(match.group(1)))
        except VideoUnavailable as error:
            raise ApiError(409, str(error)) from error
        except ValueError as error:  # unknown segment id
            raise ApiError(404, str(error)) from error
        return send_file(path, mimetype="video/webm", conditional=True)  # ETag revalidation; ranges for seeking

    return app


def parse_annotator(value: Any) -> str:
    """The annotator name of a request, trimmed; 400 unless 1-64 letters, digits, spaces or `_ . @ -`."""
    name = value.strip() if isinstance(value, str) else ""
    if not ANNOTATOR_PATTERN.fullmatch(name):
        raise ApiError(400, "annotator must be a name of 1 to 64 letters, digits, spaces or _ . @ -")
    return name


def json_body() -> dict[str, Any]:
    """The JSON object a POST carries; 400 for anything else (including a form post from another site)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object with Content-Type: application/json")
    return body


class _QuietRequestHandler(WSGIRequestHandler):
    """Leaves out the access log line of every request (the page polls and streams videos); errors still log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class LabelServer:
    """The labelling app on a threaded werkzeug server that can run in a background thread and be stopped.

    `LabelServer(path, port=0).start()` picks a free port; `.url` is the address to open (with the token when one is
    set); `.stop()` shuts the server down and stops the video renderer. Binding a non-loopback host without a token
    generates one.
    """

    def __init__(self, store_path: str | Path, host: str = "127.0.0.1", port: int = 8765, *,
                 token: str | None = None, cache_dir: str | Path | None = None, width: int = 320, height: int = 240,
                 fps: int = 25, camera: str | int | None = None) -> None:
        """Build the app and bind the socket (port 0: any free port); serving starts with `start` or
        `serve_forever`."""
        token = required_token(host, token)
        self.host, self.token = host, token
        self.app = create_app(store_path, cache_dir=cache_dir, token=token, width=width, height=height, fps=fps,
                              camera=camera)
        try:
            self._server: BaseWSGIServer = make_server(host, port, self.app, threaded=True,
                                                       request_handler=_QuietRequestHandler)
        except BaseException:
            self.app.extensions["robotrl_videos"].close()
            raise
        self.port: int = self._server.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address, with `?token=` when a token is required."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/" + ("" if self.token is None else f"?token={quote(self.token, safe='')}")

    def start(self) -> LabelServer:
        """Serve in a daemon thread and return self."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="robotrl-label-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (werkzeug then returns; use `start` to serve in the background)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving, close the socket and the video renderer."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.app.extensions["robotrl_videos"].close()

    def __enter__(self) -> LabelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(store_path: str | Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, *,
          cache_dir: str | Path | None = None, width: int = 320, height: int = 240, fps: int = 25,
          camera: str | int | None = None) -> None:
    """Serve the labelling page for `store_path` until Ctrl-C, printing the URL to open."""
    server = LabelServer(store_path, host, port, token=token, cache_dir=cache_dir, width=width, height=height,
                         fps=fps, camera=camera)
    print(f"labelling {store_path}: open {server.url}  (Ctrl-C to stop)", flush=True)
    if server.token is not None and token is None:
        print("the access token was generated for this session; anyone with the URL can label", flush=True)
    # Python leaves SIGTERM at its default, and SDL (pygame renders classic-control envs) then takes it over and
    # swallows it; a handler of our own keeps `kill` working and shuts down as cleanly as Ctrl-C.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        server.serve_forever()  # returns on KeyboardInterrupt
    finally:
        server.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    print("stopped", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt, which ends `serve`."""
    raise KeyboardInterrupt
