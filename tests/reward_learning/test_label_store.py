"""The SQLite label store: round trips through the file, shared steps, mismatch errors, atomic writes, SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest
import torch

from reward_learning.label_store import SCHEMA_VERSION, DuplicateLabel, LabelStore, LabelStoreMismatch, MissingStates
from reward_learning.segments import Label, Segments

OBS, ACT, COMPONENTS, L = (3,), 2, ("progress", "effort"), 5
TASK = dict(env_id="Toy-v0", obs_shape=OBS, action_dim=ACT, component_names=COMPONENTS)


def episode(steps: int, seed: int) -> dict[str, torch.Tensor]:
    """One random trajectory: next_obs[t] == obs[t + 1], as a real rollout would give."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(steps + 1, *OBS, generator=g)
    return dict(obs=states[:-1], next_obs=states[1:], action=torch.randn(steps, ACT, generator=g),
                env_reward=torch.randn(steps, generator=g), components=torch.randn(steps, len(COMPONENTS), generator=g))


def slices(ep: dict[str, torch.Tensor], episode_id: int, starts: list[int], length: int = L) -> Segments:
    fields = {k: torch.stack([v[s:s + length] for s in starts]) for k, v in ep.items()}
    return Segments(**fields, episode=torch.full((len(starts),), episode_id, dtype=torch.int64),
                    start=torch.tensor(starts, dtype=torch.int64))


def assert_segments_equal(a: Segments, b: Segments) -> None:
    for name in ("obs", "action", "next_obs", "env_reward", "components", "episode", "start"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def filled_store(path: Path) -> tuple[LabelStore, Segments, list[int]]:
    """A store with 6 segments from two episodes and 3 queries (left i vs right i + 3)."""
    store = LabelStore(path, **TASK)
    segs = Segments.concat([slices(episode(20, 0), 0, [0, 7, 12]), slices(episode(20, 1), 1, [2, 9, 15])])
    ids = store.add_segments(segs, run="run-a")
    queries = store.add_queries(ids[:3], ids[3:], round=0, sampler="uniform")
    return store, segs, queries


def test_round_trip_through_a_reopened_store(tmp_path):
    path = tmp_path / "runs" / "x" / "labels.sqlite"
    store, segs, queries = filled_store(path)
    assert store.pending_queries() == queries
    label_ids = store.add_labels(queries, [Label.RIGHT, 0, "right"], labeller="scripted:oracle")
    store.close()

    with LabelStore(path, **TASK) as again:
        assert again.pending_queries() == []
        left, right, labels, qids, lids = again.labelled_pairs()
        assert lids.tolist() == label_ids and again.effective_label_ids() == set(label_ids)
        assert_segments_equal(left, segs[[0, 1, 2]])
        assert_segments_equal(right, segs[[3, 4, 5]])
        assert labels.tolist() == [Label.RIGHT, Label.LEFT, Label.RIGHT] and qids.tolist() == queries
        assert_segments_equal(again.segments([5, 1]), segs[[4, 0]])  # segment ids start at 1, in the order asked
        assert again.query_segments(queries[1:2]) == [(2, 5)]
    with LabelStore.open(path) as opened:  # no expectations: task and shapes come from the stored meta
        meta = opened.meta
        assert (meta["env_id"], meta["obs_shape"], meta["action_dim"]) == ("Toy-v0", OBS, ACT)
        assert meta["component_names"] == COMPONENTS and meta["schema_version"] == SCHEMA_VERSION
        assert opened.labelled_pairs().labels.tolist() == labels.tolist()


def test_overlapping_slices_share_step_rows(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite", **TASK) as store:
        ep = episode(12, 0)
        first = store.add_segments(slices(ep, 3, [0, 3]), run="r")  # steps 0..4 and 3..7 overlap on 3, 4
        assert store.counts()["steps"] == 8
        again = store.add_segments(slices(ep, 3, [3, 6]), run="r")  # slice 3..7 again, plus new steps 8..10
        assert again[0] == first[1] and store.counts()["segments"] == 3
        store.add_segments(slices(episode(12, 1), 3, [0]), run="other-run")  # same episode id, other run: own rows
        with closing(sqlite3.connect(store.path)) as raw:
            assert raw.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 11 + 5
        assert_segments_equal(store.segments([again[1]]), slices(ep, 3, [6]))


def test_conflicting_step_data_is_rejected_and_nothing_written(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite", **TASK) as store:
        store.add_segments(slices(episode(10, 0), 0, [0]), run="r")
        before = store.counts()
        with pytest.raises(ValueError, match="different data for run 'r', episode 0, step 2"):
            store.add_segments(slices(episode(10, 1), 0, [2, 5]), run="r")  # other data under the same keys
        assert store.counts() == before
        with pytest.raises(ValueError, match=r"Segments.obs has per-step shape \(4,\)"):
            bad = slices(episode(10, 0), 0, [0])
            store.add_segments(Segments(**{**vars(bad), "obs": torch.zeros(1, L, 4)}), run="r")


@pytest.mark.parametrize("field, value, shown", [
    ("env_id", "Other-v0", "'Other-v0'"),
    ("obs_shape", (4,), "(4,)"),
    ("action_dim", 3, "3"),
    ("component_names", ("progress", "energy"), "('progress', 'energy')"),
])
def test_reopening_for_another_task_names_the_field(tmp_path, field, value, shown):
    path = tmp_path / "labels.sqlite"
    LabelStore(path, **TASK).close()
    with pytest.raises(LabelStoreMismatch) as err:
        LabelStore(path, **{**TASK, field: value})
    message = str(err.value)
    stored = {"env_id": "'Toy-v0'", "obs_shape": "(3,)", "action_dim": "2", "component_names": repr(COMPONENTS)}
    assert f"{field}={stored[field]}" in message and f"{field}={shown}" in message and str(path) in message
    assert isinstance(err.value, ValueError)


def test_missing_or_foreign_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label store at .*nothing.sqlite"):
        LabelStore.open(tmp_path / "nothing.sqlite")
    with pytest.raises(FileNotFoundError):
        LabelStore(tmp_path / "nothing.sqlite", **TASK, create=False)
    assert not (tmp_path / "nothing.sqlite").exists()
    (tmp_path / "notes.txt").write_text("not a database, " * 100)
    with pytest.raises(ValueError, match="notes.txt is not a robotrl label store"):
        LabelStore(tmp_path / "notes.txt", **TASK)
    with closing(sqlite3.connect(tmp_path / "other.db")) as raw:
        raw.execute("CREATE TABLE things (x)")
        raw.commit()
    with pytest.raises(ValueError, match=r"not a robotrl label store \(a database with tables \['things'\]"):
        LabelStore(tmp_path / "other.db", **TASK)


def test_invalid_writes_leave_the_store_unchanged(tmp_path):
    store, _, queries = filled_store(tmp_path / "labels.sqlite")
    store.add_labels(queries[:1], ["left"], labeller="a")
    before = store.counts()
    with pytest.raises(ValueError, match="unknown preference label 'sideways'"):
        store.add_labels(queries, ["left", "sideways", "right"], labeller="a")
    with pytest.raises(ValueError, match="unknown preference label 7"):
        store.add_labels(queries[:1], [7], labeller="a")
    with pytest.raises(ValueError, match=r"unknown query ids \[99\].*nothing was written"):
        store.add_labels([queries[1], 99], ["left", "right"], labeller="a")
    with pytest.raises(ValueError, match=r"unknown segment ids \[42\]"):
        store.add_queries([1, 2], [3, 42], round=1, sampler="uniform")
    with pytest.raises(ValueError, match="2 query ids but 1 labels"):
        store.add_labels(queries[:2], ["left"], labeller="a")
    assert store.counts() == before
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):  # the tables refuse edits, even raw ones
        store._db.execute("UPDATE labels SET label = 'right'")
    store.close()


def test_equal_and_skip_are_kept_and_skip_is_excluded_by_default(tmp_path):
    store, segs, queries = filled_store(tmp_path / "labels.sqlite")
    label_ids = store.add_labels(queries, ["equal", Label.SKIP, "left"], labeller="scripted")
    counts = store.counts()
    assert (counts["equal"], counts["skip"], counts["left"], counts["right"]) == (1, 1, 1, 0)
    assert counts["pending"] == 0 and counts["labelled_queries"] == 3
    pairs = store.labelled_pairs()
    assert pairs.query_ids.tolist() == [queries[0], queries[2]]
    assert pairs.labels.tolist() == [Label.EQUAL, Label.LEFT]
    assert_segments_equal(pairs.left, segs[[0, 2]])
    with_skips = store.labelled_pairs(include_skipped=True)
    assert with_skips.labels.tolist() == [Label.EQUAL, Label.SKIP, Label.LEFT]
    assert_segments_equal(with_skips.right, segs[[3, 4, 5]])
    later = store.labelled_pairs(include_skipped=True, exclude_labels=set(label_ids[:2]))  # already trained on
    assert later.query_ids.tolist() == [queries[2]] and later.labels.tolist() == [Label.LEFT]
    assert later.label_ids.tolist() == label_ids[2:]
    assert_segments_equal(later.left, segs[[2]])
    assert len(store.labelled_pairs(exclude_labels=set(label_ids)).labels) == 0
    store.close()


def test_several_labellers_keep_their_latest_labels(tmp_path):
    store, _, queries = filled_store(tmp_path / "labels.sqlite")
    store.add_labels(queries[:1], ["left"], labeller="web:alice")
    assert store.pending_queries() == queries[1:]
    assert store.pending_queries(labeller="web:bob") == queries
    store.add_labels(queries[:2], ["right", "left"], labeller="web:bob")
    store.add_labels(queries[:1], ["equal"], labeller="web:alice")  # alice changes her mind: appended, latest wins
    counts = store.counts()
    assert (counts["labels"], counts["labeller/web:alice"], counts["labeller/web:bob"]) == (4, 2, 2)
    assert [r.label for r in store.labels(queries[0])] == [Label.LEFT, Label.RIGHT, Label.EQUAL]
    pairs = store.labelled_pairs()
    assert pairs.query_ids.tolist() == [queries[0], queries[0], queries[1]]
    assert pairs.labels.tolist() == [Label.RIGHT, Label.EQUAL, Label.LEFT]  # per query, by time of the latest label
    assert store.labelled_pairs(labeller="web:alice").labels.tolist() == [Label.EQUAL]
    assert store.pending_queries() == queries[2:]
    store.close()


def test_empty_store_gives_empty_tensors(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite", **TASK) as store:
        left, right, labels, qids, lids = store.labelled_pairs()
        assert len(left) == len(right) == len(labels) == len(qids) == len(lids) == 0
        assert left.obs.shape[2:] == OBS and left.components.shape[2:] == (2,)


CHILD = textwrap.dedent("""
    import sys
    from reward_learning.label_store import LabelStore

    store = LabelStore.open(sys.argv[1])
    queries = store.pending_queries()
    written = 0
    while True:  # relabel in batches of 7 forever: the parent ends this with SIGKILL
        for lo in range(0, len(queries) - 6, 7):
            store.add_labels(queries[lo:lo + 7], ["left", "right", "equal", "skip", "left", "right", "left"], "bot")
            written += 7
            print(written, flush=True)
""")


def test_committed_labels_survive_sigkill_and_partial_calls_leave_nothing(tmp_path):
    path = tmp_path / "labels.sqlite"
    with LabelStore(path, **TASK) as store:
        ids = store.add_segments(slices(episode(40, 0), 0, list(range(0, 35, 5))), run="r")
        store.add_queries([ids[i % 7] for i in range(70)], [ids[(i + 1) % 7] for i in range(70)], round=0,
                          sampler="uniform")
    (tmp_path / "child.py").write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    reported, deadline = 0, time.monotonic() + 60
    try:
        while reported < 140 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        stderr = child.stderr.read()
        child.stderr.close()
    assert reported >= 140, f"the writer did not get going: {stderr}"
    assert child.returncode == -signal.SIGKILL

    with LabelStore(path, **TASK) as store:
        counts = store.counts()
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert counts["labels"] >= reported
        assert counts["labels"] % 7 == 0  # every call landed whole or not at all
        assert len(store.labelled_pairs(include_skipped=True).labels) == 70
        store.add_labels([1], ["right"], labeller="after-crash")  # and the store stays writable
        assert store.counts()["labels"] == counts["labels"] + 1


def test_slices_past_a_termination_keep_their_absorbing_suffix(tmp_path):
    """Only real steps are stored; the absorbing suffix comes back from the segment row, repeating the last step."""
    ep = episode(3, 4)  # a 3-step episode that terminated
    padded = {k: torch.cat([v, v[-1:].expand(2, *v.shape[1:])])[None] for k, v in ep.items()}
    absorbing = torch.tensor([[False, False, False, True, True]])
    segs = Segments(**padded, episode=torch.tensor([0]), start=torch.tensor([0]), absorbing=absorbing)
    with LabelStore(tmp_path / "s.sqlite", **TASK) as store:
        ids = store.add_segments(segs, run="r")
        assert store.counts()["steps"] == 3
        back = store.segments(ids)
    assert torch.equal(back.absorbing, absorbing)
    assert_segments_equal(back, segs)
    broken = Segments(**padded, episode=torch.tensor([1]), start=torch.tensor([0]),
                      absorbing=torch.tensor([[False, True, False, True, True]]))
    with LabelStore(tmp_path / "s.sqlite", **TASK) as store, pytest.raises(ValueError, match="suffix"):
        store.add_segments(broken, run="r")


def test_max_episode_per_run(tmp_path):
    store, _, _ = filled_store(tmp_path / "s.sqlite")
    with store:
        assert store.max_episode("run-a") == 1
        assert store.max_episode("other") == -1


def with_states(segs: Segments, seed: int) -> Segments:
    """The same slices with a made-up simulator state per step (a function of episode and step, as a sim's is)."""
    steps = segs.start[:, None] + torch.arange(segs.length)[None, :]
    state = torch.stack([steps.double(), segs.episode[:, None].expand_as(steps).double() + seed], -1)
    return Segments(**{k: getattr(segs, k) for k in ("obs", "action", "next_obs", "env_reward", "components",
                                                      "episode", "start", "absorbing")}, state=state)


def test_simulator_states_round_trip_and_missing_states_are_named(tmp_path):
    store = LabelStore(tmp_path / "s.sqlite", **TASK)
    segs = with_states(slices(episode(20, 0), 0, [0, 7]), seed=0.5)
    segs.absorbing[1, 3:] = True  # the second slice ends after 3 real steps
    ids = store.add_segments(segs, run="r")
    assert torch.equal(store.segments(ids).state[0], segs.state[0])
    states = store.segment_states(ids[1])
    assert states.shape == (3, 2) and states[:, 0].tolist() == [7.0, 8.0, 9.0]  # real steps only
    assert store.segment_info(ids[1]).absorbing == 2
    plain = store.add_segments(slices(episode(20, 1), 1, [0]), run="r")  # recorded without states
    assert store.segments(plain).state.shape == (1, L, 0)
    with pytest.raises(MissingStates, match="no simulator states"):
        store.segment_states(plain[0])
    with pytest.raises(ValueError, match="unknown segment id 99"):
        store.segment_info(99)


def test_label_once_undo_and_pending_per_labeller(tmp_path):
    store, _, queries = filled_store(tmp_path / "s.sqlite")
    first = store.add_label_once(queries[0], "left", "web:alice")
    with pytest.raises(DuplicateLabel):
        store.add_label_once(queries[0], "right", "web:alice")
    store.add_label_once(queries[0], "right", "web:bob")  # another person may answer the same query
    store.add_label_once(queries[1], "skip", "web:alice")
    with pytest.raises(ValueError, match="unknown query"):
        store.add_label_once(999, "left", "web:alice")
    with pytest.raises(ValueError, match="unknown preference label"):
        store.add_label_once(queries[2], "maybe", "web:alice")
    assert store.pending_queries("web:alice") == [queries[2]]

    undone = store.retract_last("web:alice")  # the skip goes, the earlier answer stays
    assert (undone.query_id, undone.label) == (queries[1], Label.SKIP)
    assert store.pending_queries("web:alice") == queries[1:]
    assert store.retract_last("web:alice").id == first
    assert store.retract_last("web:alice") is None
    assert store.pending_queries("web:alice") == queries and store.pending_queries("web:bob") == queries[1:]
    assert store.add_label_once(queries[0], "equal", "web:alice") > first  # answerable again after the undo
    pairs = store.labelled_pairs(labeller="web:alice")
    assert pairs.query_ids.tolist() == [queries[0]] and pairs.labels.tolist() == [Label.EQUAL]
    counts = store.counts()
    assert counts["retracted"] == 2 and counts["labels"] == 4 and counts["labelled_queries"] == 1
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM retractions")


def test_annotator_agreement_kappa_and_task_description(tmp_path):
    store = LabelStore(tmp_path / "s.sqlite", **TASK, task_description="prefer running forward")
    segs = slices(episode(40, 0), 0, [0, 5, 10, 15, 20, 25, 30, 35])
    ids = store.add_segments(segs, run="r")
    queries = store.add_queries(ids[:4], ids[4:], round=2, sampler="disagreement")
    store.add_labels(queries, ["left", "left", "right", "skip"], "web:a")
    store.add_labels(queries, ["left", "right", "right", "left"], "web:b")
    summary = store.annotator_summary()
    assert summary["annotators"]["web:a"] == {"labels": 4, "left": 2, "right": 1, "equal": 0, "skip": 1}
    (pair,) = summary["pairs"]
    # shared non-skipped answers: a = L L R, b = L R R -> agree 2/3; chance = (2/3)(1/3) + (1/3)(2/3) = 4/9
    assert pair["shared"] == 3 and pair["agreement"] == pytest.approx(2 / 3)
    assert pair["kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    store.close()
    with LabelStore.open(tmp_path / "s.sqlite") as again:
        assert again.meta["task_description"] == "prefer running forward"


def test_version_1_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    store, _, queries = filled_store(path)
    store.add_labels(queries[:1], ["left"], "scripted:oracle")
    store.close()
    with closing(sqlite3.connect(path)) as con:  # turn it into what a version-1 store looked like
        for trigger in ("retractions_no_update", "retractions_no_delete"):
            con.execute(f"DROP TRIGGER {trigger}")
        con.execute("DROP TABLE retractions")
        con.execute("ALTER TABLE steps DROP COLUMN state")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.commit()
    with LabelStore(path, **TASK) as upgraded:
        assert upgraded.meta["schema_version"] == SCHEMA_VERSION
        assert upgraded.labelled_pairs().labels.tolist() == [Label.LEFT]
        assert upgraded.retract_last("scripted:oracle").query_id == queries[0]
        assert upgraded.pending_queries() == queries


def test_widened_pairs_need_the_wider_segments_stored(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite", **TASK)
    ep = episode(30, 0)
    wide = slices(ep, 0, [0, 10], length=L + 4)  # two steps more on each side, as SURF with window 2 stores them
    store.add_segments(wide, run="r")
    shown = store.add_segments(slices(ep, 0, [2, 12]), run="r")
    queries = store.add_queries(shown[:1], shown[1:], round=0, sampler="uniform")
    store.add_labels(queries, ["left"], labeller="scripted")
    pairs = store.labelled_pairs(widen=2)
    assert_segments_equal(pairs.left, wide[[0]]) and assert_segments_equal(pairs.right, wide[[1]])
    with pytest.raises(ValueError, match="does not hold the 3 steps on each side"):
        store.labelled_pairs(widen=3)
    store.close()
