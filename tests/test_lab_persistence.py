"""The lab remembers across restarts (idlsec.lab.store): finished jobs and their results, uploads
and the tensors a comparison needs come back; a job that was running or queued when the server
died is 'interrupted' and can be run again. A kill -9 is simulated in-process (a second app over
the same runs folder while the first one never shut down) and done for real on `idlsec serve`."""

from __future__ import annotations

import signal
import sqlite3

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from _lab_util import LabServer, entries, png_bytes, wait_state
from idlsec.errors import ConfigError
from idlsec.lab.app import create_app
from idlsec.lab.store import SCHEMA_VERSION, LabStore

FINISHED = ("done", "failed", "cancelled", "interrupted")


def attack(upload: str, **kw) -> dict:
    return {"model": "cifar10-resnet20", "upload": upload, "interpreter": "cam", "attack": "pgd",
            "steps": 2, "targeted": False, **kw}


def test_store_schema_version_wal_and_migrations(tmp_path):
    path = tmp_path / "lab.sqlite"
    store = LabStore(path)
    assert store.version == SCHEMA_VERSION and store.journal_mode() == "wal"
    store.close()
    LabStore(path).close()  # opening again applies nothing, records nothing twice
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY version")]
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        db.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert {"jobs", "uploads", "tensors", "schema_version"} <= tables
    with pytest.raises(ConfigError, match="newer than this idlsec"):
        LabStore(path)


def test_new_app_over_the_same_runs_folder_after_a_crash(tmp_path):
    """App A never shuts down (as after kill -9); app B opens the same runs folder."""
    runs = tmp_path / "runs"
    runs.mkdir()
    a = create_app(runs, "cpu", models=entries())
    ca = TestClient(a)
    ca.__enter__()
    try:
        up = ca.post("/api/uploads", files={"file": ("red.png", png_bytes(), "image/png")}).json()
        done = ca.post("/api/jobs", json=attack(up["id"])).json()["id"]
        assert wait_state(ca.get, done, FINISHED)["state"] == "done"
        result = ca.get(f"/api/jobs/{done}/result").json()
        running = ca.post("/api/jobs", json=attack(up["id"], steps=10_000)).json()["id"]
        wait_state(ca.get, running, ("running",))
        queued = ca.post("/api/jobs", json=attack(up["id"], seed=3)).json()["id"]
        assert ca.get(f"/api/jobs/{queued}").json()["state"] == "queued"

        b = create_app(runs, "cpu", models=entries(), run_jobs=False)
        with TestClient(b) as cb:
            jobs = {j["id"]: j for j in cb.get("/api/jobs").json()}
            assert set(jobs) == {done, running, queued}
            assert jobs[done]["state"] == "done"
            assert jobs[running]["state"] == jobs[queued]["state"] == "interrupted"
            assert "run it again" in jobs[running]["error"]
            assert [j["id"] for j in cb.get("/api/jobs").json()] == [queued, running, done]  # newest first
            assert cb.get(f"/api/jobs/{done}/result").json() == result
            assert cb.get(f"/api/jobs/{running}/result").status_code == 409
            # the upload survived: a new attack on it is accepted; re-running an interrupted job
            # queues a new job with the same request; an active job cannot be re-run
            assert cb.post("/api/jobs", json=attack(up["id"])).status_code == 202
            again = cb.post(f"/api/jobs/{running}/rerun")
            assert again.status_code == 202 and again.json()["id"] not in jobs
            assert again.json()["label"] == jobs[running]["label"]
            assert cb.post(f"/api/jobs/{again.json()['id']}/rerun").status_code == 409
            assert cb.post("/api/jobs/nope/rerun").status_code == 404
    finally:
        a.state.queue.cancel(running)
        ca.__exit__(None, None, None)


def test_comparison_of_an_attack_from_before_the_restart(tmp_path):
    runs = tmp_path / "runs"
    with TestClient(create_app(runs, "cpu", models=entries())) as c:
        up = c.post("/api/uploads", files={"file": ("red.png", png_bytes(), "image/png")}).json()
        done = c.post("/api/jobs", json=attack(up["id"])).json()["id"]
        assert wait_state(c.get, done, FINISHED)["state"] == "done"
    with TestClient(create_app(runs, "cpu", models=entries())) as c:
        r = c.post(f"/api/jobs/{done}/compare", json={"interpreters": ["cam", "gradcam"]})
        assert r.status_code == 202, r.text
        assert wait_state(c.get, r.json()["id"], FINISHED)["state"] == "done"
        rows = c.get(f"/api/jobs/{r.json()['id']}/comparison").json()["comparisons"]
        assert [row["interpreter"] for row in rows] == ["cam", "gradcam"]
        assert all(row["benign_map"] is not None for row in rows)


def test_without_runs_folder_nothing_persists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(None, "cpu", models=entries(), run_jobs=False)) as c:
        up = c.post("/api/uploads", files={"file": ("red.png", png_bytes(), "image/png")}).json()
        assert c.post("/api/jobs", json=attack(up["id"])).status_code == 202
    with TestClient(create_app(None, "cpu", models=entries(), run_jobs=False)) as c:
        assert c.get("/api/jobs").json() == []
    assert list(tmp_path.iterdir()) == []


def test_kill_9_then_restart(tmp_path):
    """`idlsec serve`, SIGKILL while one job runs and one waits, then a new server."""
    runs = tmp_path / "runs"
    runs.mkdir()
    s = LabServer(runs)
    try:
        up = s.client.post("/api/uploads", files={"file": ("red.png", png_bytes(), "image/png")}).json()
        done = s.client.post("/api/jobs", json=attack(up["id"])).json()["id"]
        assert wait_state(s.client.get, done, FINISHED)["state"] == "done"
        result = s.client.get(f"/api/jobs/{done}/result").json()
        running = s.client.post("/api/jobs", json=attack(up["id"], steps=10_000)).json()["id"]
        wait_state(s.client.get, running, ("running",))
        queued = s.client.post("/api/jobs", json=attack(up["id"], seed=1)).json()["id"]
    finally:
        s.stop(signal.SIGKILL)
    s = LabServer(runs)
    try:
        jobs = {j["id"]: j["state"] for j in s.client.get("/api/jobs").json()}
        assert jobs == {done: "done", running: "interrupted", queued: "interrupted"}
        assert s.client.get(f"/api/jobs/{done}/result").json() == result
        new = s.client.post(f"/api/jobs/{queued}/rerun").json()["id"]
        assert wait_state(s.client.get, new, FINISHED)["state"] == "done"
    finally:
        s.stop(signal.SIGKILL)


def test_jobs_beyond_the_memory_window_are_read_from_the_store(tmp_path):
    runs = tmp_path / "runs"
    with TestClient(create_app(runs, "cpu", models=entries(), run_jobs=False)) as c:
        up = c.post("/api/uploads", files={"file": ("red.png", png_bytes(), "image/png")}).json()
        first = c.post("/api/jobs", json=attack(up["id"])).json()["id"]
    app = create_app(runs, "cpu", models=entries(), run_jobs=False)
    app.state.queue._jobs.clear()  # as if 100 newer jobs had pushed it out of memory
    with TestClient(app) as c:
        assert c.get(f"/api/jobs/{first}").json()["state"] == "interrupted"
        assert c.post(f"/api/jobs/{first}/cancel").json()["state"] == "interrupted"
        assert c.post(f"/api/jobs/{first}/rerun").status_code == 202
