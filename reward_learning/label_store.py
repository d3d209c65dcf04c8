"""A crash-safe SQLite store of preference data: trajectory steps, segments, queries and labels of one task.

The store lives in a run directory (e.g. `runs/x/labels.sqlite`) and is the single place where scripted teachers,
people in a web page and later runs meet: every labelled pair can be reloaded as tensors to train a reward model.

Tables (all append-only, enforced by triggers):

- `meta`     key/value JSON: env_id, obs_shape, action_dim, component_names, schema_version, created and, when given,
             task_description (shown to people who label).
- `steps`    one row per transition, keyed by (run, episode, t): obs/action/next_obs/components as float32 blobs,
             env_reward as REAL and, when recorded, the simulator state after the step as a float64 blob (so the
             slice can be re-rendered as video). Overlapping slices of one episode share rows.
- `segments` (id, run, episode, start, length): references into `steps`, never copies.
- `queries`  (id, left_segment, right_segment, round, sampler, created): pairs of segments to compare.
- `labels`   (id, query, label in 'left'/'right'/'equal'/'skip', labeller, created): relabelling appends a row; the
             latest row per (query, labeller) is the one that counts.
- `retractions` (label, created): an "undo" of a label row; a retracted row no longer counts, so the query is
             pending again for that labeller.

Version 1 stores (no states, no retractions) are upgraded in place when opened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from reward_learning.segments import Label, Segments

SCHEMA_VERSION = 2
_F64 = np.dtype("<f8")
_F32 = np.dtype("<f4")
_KIND = {label: label.name.lower() for label in Label}  # Label -> text stored in the labels table
_CODE = {kind: label for label, kind in _KIND.items()}
_CHUNK = 500  # ids per `IN (...)` lookup, below SQLite's parameter limit

_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE steps (
        run TEXT NOT NULL, episode INTEGER NOT NULL, t INTEGER NOT NULL,
        obs BLOB NOT NULL, action BLOB NOT NULL, next_obs BLOB NOT NULL,
        env_reward REAL NOT NULL, components BLOB NOT NULL, state BLOB,
        UNIQUE (run, episode, t))""",
    """CREATE TABLE segments (
        id INTEGER PRIMARY KEY, run TEXT NOT NULL, episode INTEGER NOT NULL,
        start INTEGER NOT NULL CHECK (start >= 0), length INTEGER NOT NULL CHECK (length > 0),
        absorbing INTEGER NOT NULL DEFAULT 0 CHECK (absorbing >= 0 AND absorbing < length),
        created TEXT NOT NULL, UNIQUE (run, episode, start, length))""",
    """CREATE TABLE queries (
        id INTEGER PRIMARY KEY,
        left_segment INTEGER NOT NULL REFERENCES segments (id),
        right_segment INTEGER NOT NULL REFERENCES segments (id),
        round INTEGER NOT NULL, sampler TEXT NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY, query INTEGER NOT NULL REFERENCES queries (id),
        label TEXT NOT NULL CHECK (label IN ('left', 'right', 'equal', 'skip')),
        labeller TEXT NOT NULL CHECK (labeller <> ''), created TEXT NOT NULL)""",
    "CREATE INDEX labels_by_query ON labels (query, labeller)",
]


def _append_only(tables: Sequence[str]) -> list[str]:
    return [f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'the label store is append-only'); END"
            for table in tables for op in ("UPDATE", "DELETE")]


# Added in version 2 (also run to upgrade version-1 stores).
_RETRACTIONS = ["CREATE TABLE retractions (label INTEGER PRIMARY KEY REFERENCES labels (id), created TEXT NOT NULL)",
                *_append_only(["retractions"])]
_SCHEMA += _append_only(["steps", "segments", "queries", "labels"]) + _RETRACTIONS
_EFFECTIVE = "labels.id NOT IN (SELECT label FROM retractions)"  # a label row that was not undone
# the label that counts: each labeller's latest one per query that was not undone
_LATEST = f"SELECT MAX(id) FROM labels WHERE {_EFFECTIVE} GROUP BY query, labeller"


class LabelStoreMismatch(ValueError):
    """The store on disk belongs to another task or observation/action layout than the caller expects."""


class MissingStates(ValueError):
    """The store holds no simulator states for a segment, so it cannot be rendered."""


class DuplicateLabel(ValueError):
    """The labeller already has a label (not undone) for this query."""


class SegmentInfo(NamedTuple):
    """Where one stored segment comes from."""

    id: int
    run: str
    episode: int
    start: int
    length: int
    absorbing: int  # steps after termination at the end of the slice


class QueryInfo(NamedTuple):
    """One stored query row."""

    id: int
    left_segment: int
    right_segment: int
    round: int
    sampler: str
    created: str


class LabelledPairs(NamedTuple):
    """Labelled queries as tensors: row i compares left[i] with right[i]; labels are `Label` codes."""

    left: Segments
    right: Segments
    labels: np.ndarray  # [n] int64 Label codes
    query_ids: np.ndarray  # [n] int64
    label_ids: np.ndarray  # [n] int64 ids of the label rows


class LabelRecord(NamedTuple):
    """One stored label row."""

    id: int
    query_id: int
    label: Label
    labeller: str
    created: str
    retracted: bool = False  # undone by its labeller (it no longer counts)


def _now() -> str:
    """UTC timestamp in ISO-8601 with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _f32(x: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor as a little-endian float32 array of the given shape (CPU, detached)."""
    return np.ascontiguousarray(x.detach().cpu().numpy().astype(_F32, copy=False).reshape(shape))


class LabelStore:
    """Append-only, transactional SQLite store of preference data for one task.

    Each public write call is one `BEGIN IMMEDIATE ... COMMIT` transaction, validated before anything is written, so
    a call either lands completely or not at all. The database runs in WAL mode with `synchronous=FULL`: a commit
    returns only after its WAL frames are fsynced, so committed data survives a SIGKILL of the writer and also an OS
    crash or power loss, while frames of an unfinished transaction carry no commit mark and are ignored on recovery.
    (`NORMAL` would already be safe against process kills but may drop the last commits on power loss; human labels
    are expensive and writes are batched per call, so the extra fsync per call is worth it.)

    One connection per object, used from the thread that made it; other processes (a trainer and a labelling web
    page) open their own objects on the same file: WAL lets readers proceed while one writer commits, and writers wait
    up to `timeout` seconds for each other. Copy a store only when it is closed (or copy its `-wal` file too).
    """

    def __init__(self, path: str | Path, *, env_id: str, obs_shape: Sequence[int], action_dim: int,
                 component_names: Sequence[str], create: bool = True, timeout: float = 30.0,
                 task_description: str | None = None) -> None:
        """Open the store at `path`, creating it (schema and meta) if missing and `create`; on reopen check that it
        was made for the same env_id, obs_shape, action_dim and component_names, else raise LabelStoreMismatch.
        `task_description` (what people should prefer) is saved in the meta, replacing an earlier one."""
        expected = {
            "env_id": str(env_id),
            "obs_shape": [int(d) for d in obs_shape],
            "action_dim": int(action_dim),
            "component_names": [str(n) for n in component_names],
        }
        self._connect(Path(path), expected, create, timeout)
        if task_description is not None and task_description != self._meta.get("task_description"):
            with self._write() as con:
                con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('task_description', ?)",
                            (json.dumps(str(task_description)),))
            self._meta["task_description"] = str(task_description)

    @classmethod
    def open(cls, path: str | Path, *, timeout: float = 30.0) -> LabelStore:
        """Open an existing store, taking task and shapes from its meta (e.g. for `robotrl reward train --labels`)."""
        store = cls.__new__(cls)
        store._connect(Path(path), None, False, timeout)
        return store

    # ------------------------------------------------------------------ connection and transactions

    def _connect(self, path: Path, expected: dict[str, Any] | None, create: bool, timeout: float) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"no label store at {path}: check the path (a run keeps its store at "
                                        f"<run dir>/labels.sqlite)")
            path.parent.mkdir(parents=True, exist_ok=True)
        elif path.is_dir():
            raise IsADirectoryError(f"label store path {path} is a directory; give a file such as {path}/labels.sqlite")
        con = self._con = sqlite3.connect(str(path), isolation_level=None, timeout=timeout)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            with self._write():
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "meta" in tables:
                    meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
                    if meta.get("schema_version") == 1:
                        meta["schema_version"] = self._upgrade_from_v1(con)
                elif tables or expected is None:
                    what = "an empty database" if not tables else f"a database with tables {sorted(tables)}"
                    raise ValueError(f"{path} is not a robotrl label store ({what}, no meta table)")
                else:
                    meta = {"schema_version": SCHEMA_VERSION, **expected, "created": _now()}
                    for statement in _SCHEMA:
                        con.execute(statement)
                    con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                    [(k, json.dumps(v)) for k, v in meta.items()])
        except sqlite3.OperationalError as e:  # locked, read-only, disk full...: not a format problem
            self.close()
            raise sqlite3.OperationalError(f"cannot open label store {path}: {e}") from e
        except sqlite3.DatabaseError as e:  # "file is not a database"
            self.close()
            raise ValueError(f"{path} is not a robotrl label store: {e}") from e
        except BaseException:
            self.close()
            raise
        try:
            self._check_meta(meta, expected)
        except LabelStoreMismatch:
            self.close()
            raise
        self._meta = meta
        self.env_id: str = meta["env_id"]
        self.obs_shape: tuple[int, ...] = tuple(meta["obs_shape"])
        self.action_dim: int = int(meta["action_dim"])
        self.component_names: tuple[str, ...] = tuple(meta["component_names"])

    @staticmethod
    def _upgrade_from_v1(con: sqlite3.Connection) -> int:
        """Add what version 2 has (state column, retractions table) to a version-1 store; returns the new version."""
        con.execute("ALTER TABLE steps ADD COLUMN state BLOB")
        for statement in _RETRACTIONS:
            con.execute(statement)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(SCHEMA_VERSION),))
        return SCHEMA_VERSION

    def _check_meta(self, meta: dict[str, Any], expected: dict[str, Any] | None) -> None:
        version = meta.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise LabelStoreMismatch(f"label store {self.path} has schema_version {version!r}, this robotrl reads "
                                     f"schema_version {SCHEMA_VERSION}: upgrade robotrl or use another labels path")
        for field, want in (expected or {}).items():
            have = meta.get(field)
            if have != want:
                if isinstance(want, list):
                    have, want = tuple(have) if isinstance(have, list) else have, tuple(want)
                raise LabelStoreMismatch(
                    f"label store {self.path} was made for {field}={have!r}, but this run has {field}={want!r}; "
                    f"use a new labels path for this task, or the task the store was made for")

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise sqlite3.ProgrammingError(f"label store {self.path} is closed")
        return self._con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock up front, commits on success, rolls back on any error."""
        con = self._db
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so multi-statement reads see one consistent snapshot while others write."""
        con = self._db
        con.execute("BEGIN")
        try:
            yield con
        finally:
            con.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (idempotent); the last closer checkpoints the WAL into the main file."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def meta(self) -> dict[str, Any]:
        """env_id, obs_shape, action_dim, component_names, schema_version and created (UTC ISO-8601)."""
        meta = dict(self._meta)
        meta["obs_shape"] = tuple(meta["obs_shape"])
        meta["component_names"] = tuple(meta["component_names"])
        return meta

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r}, env_id={self.env_id!r})"

    # ------------------------------------------------------------------ writes

    def add_segments(self, segments: Segments, run: str) -> list[int]:
        """Store the steps of each slice (shared with overlapping slices of the same run and episode) and one
        segment row per slice; return the segment ids (an already stored slice keeps its id).

        Episode ids are only unique within a run, hence `run`. Data is stored as float32, simulator states (when
        `segments.state` is not empty) as float64. Raises ValueError, writing nothing, if shapes do not match the
        store or a step is already stored with different data.
        """
        q, length = len(segments), segments.length
        k = len(self.component_names)
        expected = (("obs", segments.obs, self.obs_shape), ("next_obs", segments.next_obs, self.obs_shape),
                    ("action", segments.action, (self.action_dim,)), ("components", segments.components, (k,)),
                    ("env_reward", segments.env_reward, ()))
        for name, value, tail in expected:
            if tuple(value.shape[2:]) != tail:
                raise ValueError(f"Segments.{name} has per-step shape {tuple(value.shape[2:])}, but label store "
                                 f"{self.path} holds {tail} for {self.env_id}")
        if not run:
            raise ValueError("run must be a non-empty name")
        if q == 0:
            return []
        obs = _f32(segments.obs, (q, length, -1))
        next_obs = _f32(segments.next_obs, (q, length, -1))
        action = _f32(segments.action, (q, length, -1))
        comps = _f32(segments.components, (q, length, k))
        reward = _f32(segments.env_reward, (q, length))
        episode = segments.episode.detach().cpu().numpy().astype(np.int64)
        start = segments.start.detach().cpu().numpy().astype(np.int64)
        absorbing = segments.absorbing.detach().cpu().numpy().astype(bool)
        state = segments.state.detach().cpu().numpy().astype(_F64).reshape(q, length, -1)
        has_state = state.shape[2] > 0
        real = length - absorbing.sum(1)
        if (absorbing != (np.arange(length)[None, :] >= real[:, None])).any() or (real < 1).any():
            raise ValueError("Segments.absorbing must mark a suffix of each slice after at least one real step")
        if (start < 0).any():
            raise ValueError(f"Segments.start must be >= 0, got {start.min()}")
        if np.isnan(reward).any():
            raise ValueError("Segments.env_reward contains NaN; the label store keeps finite rewards only")

        rows: dict[tuple[int, int], tuple[bytes, bytes, bytes, bytes, bytes]] = {}
        states: dict[tuple[int, int], bytes | None] = {}
        for i in range(q):
            ep = int(episode[i])
            for j in range(int(real[i])):  # absorbing steps are implied by the segment row, not stored
                key = (ep, int(start[i]) + j)
                row = (obs[i, j].tobytes(), action[i, j].tobytes(), next_obs[i, j].tobytes(), reward[i, j].tobytes(),
                       comps[i, j].tobytes())
                states[key] = state[i, j].tobytes() if has_state else None
                if rows.setdefault(key, row) != row:
                    raise ValueError(f"two slices give different data for run {run!r}, episode {key[0]}, step "
                                     f"{key[1]}; slices of one episode must agree where they overlap")
        created = _now()
        with self._write() as con:
            new = dict(rows)
            span: dict[int, tuple[int, int]] = {}
            for ep, t in rows:
                lo, hi = span.get(ep, (t, t))
                span[ep] = (min(lo, t), max(hi, t))
            for ep, (lo, hi) in span.items():
                for t, o, a, n, r, c in con.execute(
                        "SELECT t, obs, action, next_obs, env_reward, components FROM steps "
                        "WHERE run = ? AND episode = ? AND t BETWEEN ? AND ? ORDER BY t", (run, ep, lo, hi)):
                    mine = new.pop((ep, t), None)
                    if mine is not None and mine != (o, a, n, np.float32(r).tobytes(), c):
                        raise ValueError(f"label store {self.path} already holds different data for run {run!r}, "
                                         f"episode {ep}, step {t}; use a new run name for a new set of episodes")
            con.executemany(
                "INSERT INTO steps (run, episode, t, obs, action, next_obs, env_reward, components, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run, ep, t, o, a, n, float(np.frombuffer(r, _F32)[0]), c, states[(ep, t)])
                 for (ep, t), (o, a, n, r, c) in new.items()])
            ids = []
            for ep, st, n_real in zip(episode.tolist(), start.tolist(), real.tolist(), strict=True):
                key = (run, ep, st, length)
                con.execute("INSERT OR IGNORE INTO segments (run, episode, start, length, absorbing, created) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (*key, length - n_real, created))
                ids.append(con.execute("SELECT id FROM segments WHERE run = ? AND episode = ? AND start = ? "
                                       "AND length = ?", key).fetchone()[0])
        return ids

    def add_queries(self, left: Sequence[int], right: Sequence[int], *, round: int, sampler: str) -> list[int]:
        """Store pairs (left[i], right[i]) of segment ids as queries from query round `round` chosen by `sampler`;
        return the query ids. Unknown segment ids raise ValueError and nothing is written."""
        left, right = [int(i) for i in left], [int(i) for i in right]
        if len(left) != len(right):
            raise ValueError(f"{len(left)} left segments but {len(right)} right segments")
        created = _now()
        with self._write() as con:
            missing = sorted(set(left + right) - self._existing(con, "segments", left + right))
            if missing:
                raise ValueError(f"unknown segment ids {missing[:10]} in label store {self.path}; nothing was written")
            ids = []
            for a, b in zip(left, right, strict=True):
                cur = con.execute("INSERT INTO queries (left_segment, right_segment, round, sampler, created) "
                                  "VALUES (?, ?, ?, ?, ?)", (a, b, int(round), str(sampler), created))
                ids.append(int(cur.lastrowid))
        return ids

    def add_labels(self, query_ids: Sequence[int], labels: Sequence[Label | int | str], labeller: str) -> list[int]:
        """Append labels[i] for query_ids[i] by `labeller` (e.g. 'scripted:oracle', 'web:alice'); returns the label
        ids.

        Labels are `Label` members, codes or names. Invalid labels or unknown query ids raise ValueError and nothing
        is written. Relabelling appends; the latest label per (query, labeller) is the one used.
        """
        query_ids = [int(i) for i in query_ids]
        if len(query_ids) != len(labels):
            raise ValueError(f"{len(query_ids)} query ids but {len(labels)} labels")
        if not isinstance(labeller, str) or not labeller:
            raise ValueError(f"labeller must be a non-empty name, got {labeller!r}")
        kinds = [_KIND[Label.parse(label)] for label in labels]
        created = _now()
        with self._write() as con:
            missing = sorted(set(query_ids) - self._existing(con, "queries", query_ids))
            if missing:
                raise ValueError(f"unknown query ids {missing[:10]} in label store {self.path}; nothing was written")
            return [int(con.execute("INSERT INTO labels (query, label, labeller, created) VALUES (?, ?, ?, ?)",
                                    (i, kind, labeller, created)).lastrowid)
                    for i, kind in zip(query_ids, kinds, strict=True)]

    def add_label_once(self, query_id: int, label: Label | int | str, labeller: str) -> int:
        """Append one label unless `labeller` already has one for the query (not undone), atomically; returns the
        label id. Raises DuplicateLabel for a second answer, ValueError for an unknown query or invalid label."""
        kind = _KIND[Label.parse(label)]
        if not isinstance(labeller, str) or not labeller:
            raise ValueError(f"labeller must be a non-empty name, got {labeller!r}")
        with self._write() as con:
            if not self._existing(con, "queries", [int(query_id)]):
                raise ValueError(f"unknown query id {query_id} in label store {self.path}")
            if con.execute(f"SELECT 1 FROM labels WHERE query = ? AND labeller = ? AND {_EFFECTIVE}",
                           (int(query_id), labeller)).fetchone():
                raise DuplicateLabel(f"{labeller} has already labelled query {query_id}; undo it first to change it")
            cur = con.execute("INSERT INTO labels (query, label, labeller, created) VALUES (?, ?, ?, ?)",
                              (int(query_id), kind, labeller, _now()))
            return int(cur.lastrowid)

    def retract_last(self, labeller: str) -> LabelRecord | None:
        """Undo `labeller`'s most recent label that still counts (append-only: a retraction row); returns it, or
        None when there is nothing to undo. The query is pending again for that labeller."""
        with self._write() as con:
            row = con.execute(f"SELECT id, query, label, labeller, created FROM labels WHERE labeller = ? AND "
                              f"{_EFFECTIVE} ORDER BY id DESC LIMIT 1", (labeller,)).fetchone()
            if row is None:
                return None
            con.execute("INSERT INTO retractions (label, created) VALUES (?, ?)", (row[0], _now()))
        i, q, kind, who, when = row
        return LabelRecord(i, q, _CODE[kind], who, when)

    @staticmethod
    def _existing(con: sqlite3.Connection, table: str, ids: Sequence[int]) -> set[int]:
        unique = sorted(set(ids))
        found: set[int] = set()
        for lo in range(0, len(unique), _CHUNK):
            chunk = unique[lo:lo + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in con.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk))
        return found

    # ------------------------------------------------------------------ reads

    def max_episode(self, run: str) -> int:
        """The largest episode id stored for `run` (-1 if none): a resumed run numbers new episodes above it."""
        with self._read() as con:
            value = con.execute("SELECT MAX(episode) FROM steps WHERE run = ?", (run,)).fetchone()[0]
        return -1 if value is None else int(value)

    def pending_queries(self, labeller: str | None = None) -> list[int]:
        """Ids of queries with no label yet (from `labeller`, or from anyone if None), oldest first.
        A 'skip' counts as an answer, an undone label does not."""
        sql = (f"SELECT id FROM queries q WHERE NOT EXISTS (SELECT 1 FROM labels WHERE labels.query = q.id AND "
               f"{_EFFECTIVE}{{}}) ORDER BY id")
        if labeller is None:
            return [r[0] for r in self._db.execute(sql.format(""))]
        return [r[0] for r in self._db.execute(sql.format(" AND labels.labeller = ?"), (labeller,))]

    def query_segments(self, query_ids: Sequence[int]) -> list[tuple[int, int]]:
        """The (left, right) segment ids of each query; unknown ids raise ValueError."""
        query_ids = [int(i) for i in query_ids]
        found: dict[int, tuple[int, int]] = {}
        unique = sorted(set(query_ids))
        for lo in range(0, len(unique), _CHUNK):
            chunk = unique[lo:lo + _CHUNK]
            for i, a, b in self._db.execute(f"SELECT id, left_segment, right_segment FROM queries WHERE id IN "
                                            f"({','.join('?' * len(chunk))})", chunk):
                found[i] = (a, b)
        missing = sorted(set(query_ids) - set(found))
        if missing:
            raise ValueError(f"unknown query ids {missing[:10]} in label store {self.path}")
        return [found[i] for i in query_ids]

    def labels(self, query_id: int | None = None) -> list[LabelRecord]:
        """All stored label rows (including superseded and undone ones), in insertion order; only one query's if
        given."""
        sql = f"SELECT id, query, label, labeller, created, NOT ({_EFFECTIVE}) FROM labels"
        rows = (self._db.execute(sql + " ORDER BY id") if query_id is None
                else self._db.execute(sql + " WHERE query = ? ORDER BY id", (int(query_id),)))
        return [LabelRecord(i, q, _CODE[kind], who, when, bool(gone)) for i, q, kind, who, when, gone in rows]

    def effective_label_ids(self, labeller: str | None = None) -> set[int]:
        """Ids of the labels that count (each labeller's latest per query, not undone); only `labeller`'s if given."""
        sql, args = f"SELECT id FROM labels WHERE id IN ({_LATEST})", ()
        if labeller is not None:
            sql, args = sql + " AND labeller = ?", (labeller,)
        return {r[0] for r in self._db.execute(sql, args)}

    def labelled_pairs(self, include_skipped: bool = False, labeller: str | None = None,
                       exclude_labels: Collection[int] = (), widen: int = 0) -> LabelledPairs:
        """Every labelled query as tensors, in query-id order: one row per (query, labeller) holding that labeller's
        latest label that was not undone. Skipped queries are left out unless `include_skipped`; only `labeller`'s
        labels if given; label ids in `exclude_labels` (e.g. the ones a run already trained on) are not loaded.

        `widen` > 0 loads each segment with `widen` more steps on both sides (SURF's crop window): the store must
        hold those wider segments too (runs with SURF store them), else ValueError."""
        sql = ("SELECT l.query, l.label, q.left_segment, q.right_segment, l.id "
               "FROM labels l JOIN queries q ON q.id = l.query "
               f"WHERE l.id IN ({_LATEST})")
        args: tuple[str, ...] = ()
        if labeller is not None:
            sql, args = sql + " AND l.labeller = ?", (labeller,)
        if not include_skipped:
            sql += " AND l.label <> 'skip'"
        with self._read() as con:
            rows = con.execute(sql + " ORDER BY l.query, l.id", args).fetchall()
            if exclude_labels:
                rows = [r for r in rows if r[4] not in exclude_labels]
            left = self._gather(con, self._widened(con, [r[2] for r in rows], widen))
            right = self._gather(con, self._widened(con, [r[3] for r in rows], widen))
        labels = np.array([int(_CODE[r[1]]) for r in rows], dtype=np.int64)
        query_ids = np.array([r[0] for r in rows], dtype=np.int64)
        label_ids = np.array([r[4] for r in rows], dtype=np.int64)
        return LabelledPairs(left, right, labels, query_ids, label_ids)

    def _widened(self, con: sqlite3.Connection, ids: list[int], widen: int) -> list[int]:
        """The ids of the segments that extend each of `ids` by `widen` steps on both sides (same run and episode)."""
        if widen == 0:
            return ids
        found: dict[int, int] = {}
        unique = sorted(set(ids))
        for lo in range(0, len(unique), _CHUNK):
            chunk = unique[lo:lo + _CHUNK]
            found.update(con.execute(
                "SELECT s.id, w.id FROM segments s JOIN segments w ON w.run = s.run AND w.episode = s.episode AND "
                f"w.start = s.start - ? AND w.length = s.length + 2 * ? WHERE s.id IN ({','.join('?' * len(chunk))})",
                (widen, widen, *chunk)))
        missing = sorted(set(unique) - set(found))
        if missing:
            raise ValueError(f"label store {self.path} does not hold the {widen} steps on each side of segments "
                             f"{missing[:10]} (stores of runs with SURF window {widen} do)")
        return [found[i] for i in ids]

    def segments(self, ids: Sequence[int]) -> Segments:
        """Rebuild the given segments (all of one length) from the stored steps, in the order given; `state` is
        filled when every step of them has a stored simulator state."""
        with self._read() as con:
            return self._gather(con, [int(i) for i in ids])

    def _gather(self, con: sqlite3.Connection, ids: list[int]) -> Segments:
        info: dict[int, tuple[str, int, int, int, int]] = {}
        unique = sorted(set(ids))
        for lo in range(0, len(unique), _CHUNK):
            chunk = unique[lo:lo + _CHUNK]
            for i, *rest in con.execute(f"SELECT id, run, episode, start, length, absorbing FROM segments WHERE id IN "
                                        f"({','.join('?' * len(chunk))})", chunk):
                info[i] = tuple(rest)
        missing = sorted(set(unique) - set(info))
        if missing:
            raise ValueError(f"unknown segment ids {missing[:10]} in label store {self.path}")
        lengths = sorted({v[3] for v in info.values()})
        if len(lengths) > 1:
            raise ValueError(f"segments in label store {self.path} have different lengths {lengths}; request segments "
                             f"of one length at a time (or crop them to a common length)")
        length = lengths[0] if lengths else 0
        n, k = len(unique), len(self.component_names)
        obs = np.empty((n, length, *self.obs_shape), np.float32)
        next_obs = np.empty_like(obs)
        action = np.empty((n, length, self.action_dim), np.float32)
        comps = np.empty((n, length, k), np.float32)
        reward = np.empty((n, length), np.float32)
        absorbing = np.zeros((n, length), bool)
        states: list[np.ndarray | None] = []
        for row, seg in enumerate(unique):
            run, episode, start, _, n_absorbing = info[seg]
            real = length - n_absorbing
            steps = con.execute("SELECT obs, action, next_obs, env_reward, components, state FROM steps WHERE "
                                "run = ? AND episode = ? AND t >= ? AND t < ? ORDER BY t",
                                (run, episode, start, start + real)).fetchall()
            if len(steps) != real:
                raise RuntimeError(f"label store {self.path} is missing steps of segment {seg} (run {run!r}, episode "
                                   f"{episode}, steps {start}..{start + real - 1}): found {len(steps)} of {real}")
            steps += [steps[-1]] * n_absorbing  # absorbing steps repeat the terminal transition
            absorbing[row, real:] = True
            for out, col in ((obs, 0), (action, 1), (next_obs, 2), (comps, 4)):
                out[row] = np.frombuffer(b"".join(s[col] for s in steps), _F32).reshape(out.shape[1:])
            reward[row] = [s[3] for s in steps]
            states.append(None if any(s[5] is None for s in steps)
                          else np.frombuffer(b"".join(s[5] for s in steps), _F64).reshape(length, -1))
        state = np.zeros((n, length, 0))
        if states and all(x is not None for x in states) and len({x.shape for x in states}) == 1:
            state = np.stack(states)  # type: ignore[arg-type]
        where = torch.as_tensor(np.searchsorted(unique, np.asarray(ids, dtype=np.int64)), dtype=torch.long)
        return Segments(
            obs=torch.from_numpy(obs)[where], action=torch.from_numpy(action)[where],
            next_obs=torch.from_numpy(next_obs)[where], env_reward=torch.from_numpy(reward)[where],
            components=torch.from_numpy(comps)[where],
            episode=torch.tensor([info[i][1] for i in ids], dtype=torch.int64).reshape(-1),
            start=torch.tensor([info[i][2] for i in ids], dtype=torch.int64).reshape(-1),
            absorbing=torch.from_numpy(absorbing)[where], state=torch.from_numpy(state)[where])

    def segment_info(self, segment_id: int) -> SegmentInfo:
        """Where a stored segment comes from; unknown ids raise ValueError."""
        row = self._db.execute("SELECT id, run, episode, start, length, absorbing FROM segments WHERE id = ?",
                               (int(segment_id),)).fetchone()
        if row is None:
            raise ValueError(f"unknown segment id {segment_id} in label store {self.path}")
        return SegmentInfo(*row)

    def segment_states(self, segment_id: int) -> np.ndarray:
        """The simulator states after each real (non-absorbing) step of a segment, float64 [steps, d]. Raises
        MissingStates when they were not recorded (runs record them when people label, see `teacher: human`)."""
        info = self.segment_info(segment_id)
        real = info.length - info.absorbing
        rows = self._db.execute("SELECT state FROM steps WHERE run = ? AND episode = ? AND t >= ? AND t < ? "
                                "ORDER BY t", (info.run, info.episode, info.start, info.start + real)).fetchall()
        if len(rows) != real or any(r[0] is None for r in rows):
            raise MissingStates(f"segment {segment_id} in label store {self.path} has no simulator states, so it "
                                f"cannot be rendered: the run that stored it did not record them (runs with "
                                f"`teacher: human` and `robotrl reward queries` do)")
        return np.frombuffer(b"".join(r[0] for r in rows), _F64).reshape(real, -1).copy()

    def query_info(self, query_id: int) -> QueryInfo:
        """One query row; unknown ids raise ValueError."""
        row = self._db.execute("SELECT id, left_segment, right_segment, round, sampler, created FROM queries "
                               "WHERE id = ?", (int(query_id),)).fetchone()
        if row is None:
            raise ValueError(f"unknown query id {query_id} in label store {self.path}")
        return QueryInfo(*row)

    def _effective_labels(self, con: sqlite3.Connection) -> list[tuple[int, str, str, str]]:
        """(query, label, labeller, created) of each labeller's latest label per query that was not undone."""
        return con.execute(f"SELECT query, label, labeller, created FROM labels WHERE id IN ({_LATEST}) "
                           f"ORDER BY query, labeller").fetchall()

    def annotator_summary(self) -> dict[str, Any]:
        """Per-labeller counts of labels that count, and for each pair of labellers their agreement and Cohen's
        kappa on the queries both answered with left/right/equal (skips are left out)."""
        with self._read() as con:
            rows = self._effective_labels(con)
        annotators: dict[str, dict[str, int]] = {}
        answers: dict[str, dict[int, str]] = {}
        for query, kind, who, _ in rows:
            counts = annotators.setdefault(who, {"labels": 0, **{k: 0 for k in _CODE}})
            counts["labels"] += 1
            counts[kind] += 1
            if kind != "skip":
                answers.setdefault(who, {})[query] = kind
        pairs = []
        names = sorted(annotators)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = sorted(set(answers.get(a, {})) & set(answers.get(b, {})))
                pairs.append({"a": a, "b": b, "shared": len(shared),
                              **_agreement([answers[a][q] for q in shared], [answers[b][q] for q in shared])})
        return {"annotators": annotators, "pairs": pairs}

    def counts(self) -> dict[str, int]:
        """Row counts: steps, segments, queries, labels (all rows, superseded and undone ones too), retracted,
        labelled_queries and pending (undone labels do not count),
        one key per label kind ('left', 'right', 'equal', 'skip') and one 'labeller/<name>' key per labeller."""
        with self._read() as con:
            out = {table: con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                   for table in ("steps", "segments", "queries", "labels")}
            out["labelled_queries"] = con.execute(f"SELECT COUNT(DISTINCT query) FROM labels WHERE {_EFFECTIVE}"
                                                  ).fetchone()[0]
            out["retracted"] = con.execute("SELECT COUNT(*) FROM retractions").fetchone()[0]
            out["pending"] = out["queries"] - out["labelled_queries"]
            out.update({kind: 0 for kind in _CODE})
            out.update(dict(con.execute("SELECT label, COUNT(*) FROM labels GROUP BY label")))
            out.update({f"labeller/{who}": n for who, n in
                        con.execute("SELECT labeller, COUNT(*) FROM labels GROUP BY labeller ORDER BY labeller")})
        return out


def _agreement(a: Sequence[str], b: Sequence[str]) -> dict[str, float]:
    """Share of equal answers and Cohen's kappa (chance-corrected agreement) of two labellers on the same queries."""
    if not a:
        return {"agreement": float("nan"), "kappa": float("nan")}
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    kinds = set(a) | set(b)
    expected = sum((list(a).count(k) / len(a)) * (list(b).count(k) / len(b)) for k in kinds)
    kappa = 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)
    return {"agreement": observed, "kappa": kappa}
