"""The lab's memory across restarts: jobs (kind, request, state, progress, error, result), the
tensors a comparison needs, and uploads, in one SQLite file under the runs folder
(``<runs>/.lab/lab.sqlite``; a dot folder, so the runs browser skips it).

Standard-library ``sqlite3`` in WAL mode (readers never wait for the worker's writes; a killed
server leaves a database that opens with every committed write). One connection shared by the
request threads and the worker, serialised by a lock. ``MIGRATIONS`` lists the schema versions;
opening a database applies the ones it lacks, in order, and records them in ``schema_version``.
A database written by a newer idlsec (a version this one does not know) is refused.

Without ``--runs`` the store lives in memory: the lab works, and forgets on exit."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ACTIVE = ("queued", "running")

# version -> statements that bring the schema from version - 1 to version
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE jobs (
               id TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, state TEXT NOT NULL,
               request TEXT, error TEXT, done INTEGER NOT NULL DEFAULT 0,
               total INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
               created REAL NOT NULL, started REAL, finished REAL, result TEXT)""",
        "CREATE INDEX jobs_created ON jobs (created)",
        """CREATE TABLE uploads (
               id TEXT PRIMARY KEY, filename TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL)""",
        """CREATE TABLE tensors (
               job TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE, meta TEXT NOT NULL,
               data BLOB NOT NULL)""",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)
JOB_FIELDS = ("id", "kind", "label", "state", "error", "done", "total", "message", "created", "started",
              "finished")


class LabStore:
    """SQLite store of the lab's jobs and uploads (``path`` None: in memory)."""

    def __init__(self, path: str | os.PathLike | None = None, *, keep_jobs: int = 1000,
                 keep_uploads: int = 64):
        self.path = Path(path) if path is not None else None
        self.keep_jobs, self.keep_uploads = keep_jobs, keep_uploads
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"cannot create the lab's database folder {self.path.parent}: {e}") from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False,
                                       isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"cannot open the lab's database {self.path}: {e}") from None

    # --- schema ----------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._lock:
            db = self._db
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied REAL)")
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise ConfigError(f"the lab's database {self.path} has schema version {current}, newer than "
                                  f"this idlsec's {SCHEMA_VERSION}: upgrade idlsec or use another --runs")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in MIGRATIONS[version]:
                        db.execute(stmt)
                    db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")

    @property
    def version(self) -> int:
        with self._lock:
            return self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    def journal_mode(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- jobs ------------------------------------------------------------------------------------
    def insert_job(self, job, request: dict | None) -> None:
        values = [getattr(job, f) for f in JOB_FIELDS]
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO jobs ({', '.join(JOB_FIELDS)}, request) "
                             f"VALUES ({', '.join('?' * (len(JOB_FIELDS) + 1))})",
                             (*values, None if request is None else json.dumps(request)))
            self._prune_jobs()

    def update_job(self, job, result: Any = None) -> None:
        """Write the job's state, progress and times (and its result when given)."""
        fields = [f for f in JOB_FIELDS if f != "id"]
        sets = ", ".join(f"{f} = ?" for f in fields)
        args = [getattr(job, f) for f in fields]
        if result is not None:
            sets += ", result = ?"
            args.append(json.dumps(result))
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*args, job.id))

    def jobs(self, limit: int) -> list[dict]:
        """The newest ``limit`` jobs (without results), newest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(JOB_FIELDS)}, request FROM jobs "
                                    "ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for row in rows:
            d = dict(zip((*JOB_FIELDS, "request"), row))
            d["request"] = json.loads(d["request"]) if d["request"] else None
            out.append(d)
        return out

    def job(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(JOB_FIELDS)}, request FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        if row is None:
            return None
        d = dict(zip((*JOB_FIELDS, "request"), row))
        d["request"] = json.loads(d["request"]) if d["request"] else None
        return d

    def request(self, job_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def result(self, job_id: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def mark_interrupted(self, now: float | None = None) -> int:
        """Jobs left queued or running by a server that died: state 'interrupted'. Returns their count."""
        now = time.time() if now is None else now
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET state = 'interrupted', finished = ?, "
                "error = 'the server stopped while the job was ' || state || '; run it again' "
                f"WHERE state IN ({', '.join('?' * len(ACTIVE))})", (now, *ACTIVE))
            return cur.rowcount

    def _prune_jobs(self) -> None:
        self._db.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state NOT IN ('queued', "
                         "'running') ORDER BY created DESC LIMIT -1 OFFSET ?)", (self.keep_jobs,))

    # --- tensors of attack results (what a later comparison needs) ---------------------------------
    def put_tensors(self, job_id: str, meta: dict, tensors: dict) -> None:
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tensors VALUES (?, ?, ?)", (job_id, json.dumps(meta), data))

    def get_tensors(self, job_id: str) -> tuple[dict, dict] | None:
        with self._lock:
            row = self._db.execute("SELECT meta, data FROM tensors WHERE job = ?", (job_id,)).fetchone()
        if row is None:
            return None
        from safetensors.torch import load

        return json.loads(row[0]), load(bytes(row[1]))

    # --- uploads ---------------------------------------------------------------------------------
    def add_upload(self, uid: str, filename: str, data: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?)",
                             (uid, filename, sqlite3.Binary(data), time.time()))
            self._db.execute("DELETE FROM uploads WHERE id IN (SELECT id FROM uploads ORDER BY created DESC "
                             "LIMIT -1 OFFSET ?)", (self.keep_uploads,))

    def uploads(self) -> list[tuple[str, str, bytes]]:
        """(id, filename, bytes), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, filename, data FROM uploads ORDER BY created").fetchall()
        return [(r[0], r[1], bytes(r[2])) for r in rows]
