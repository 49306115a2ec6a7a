"""The lab's HTTP API (FastAPI) and the built single-page app (``lab/static``).

``create_app(runs_dir, device)`` returns the ASGI app that ``idlsec serve`` runs. Every endpoint
validates its input: pydantic answers 422 for malformed requests, IdlsecError becomes 400 (404 for
unknown jobs/runs and missing data, 413/415 for uploads, 429 for a full queue), with a message."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

import idlsec

from ..errors import ConfigError, IdlsecError, InputError, ResourceError
from . import schemas
from .engine import Engine
from .jobs import Job, JobQueue, QueueFull
from .models import LabModels, ModelEntry
from .runs import RunStore

STATIC = Path(__file__).parent / "static"
ERRORS = {"model": schemas.Message}


class NotFound(IdlsecError):
    pass


class TooLarge(IdlsecError):
    pass


class NotImage(IdlsecError):
    pass


def _status(queue: JobQueue, job: Job) -> schemas.JobStatus:
    return schemas.JobStatus(
        id=job.id, kind=job.kind, state=job.state, error=job.error, label=job.label, created=job.created,
        started=job.started, finished=job.finished, position=queue.position(job) if job.state == "queued" else None,
        progress=schemas.Progress(done=job.done, total=job.total, message=job.message,
                                  fraction=1.0 if job.state == "done" else (job.done / job.total if job.total else 0.0)))


def create_app(runs_dir: str | Path | None = None, device: str = "cpu", *, static_dir: Path | None = STATIC,
               max_queued: int = schemas.MAX_QUEUED, run_jobs: bool = True,
               allowed_hosts: list[str] | None = None, models: list[ModelEntry] | None = None) -> FastAPI:
    """``models``: what the lab offers (``ModelEntry`` from ``--model``/``--models-file``, loaded
    now); None: every zoo model whose weights are at hand."""
    engine = Engine(device, models=LabModels(models, device))
    queue = JobQueue(max_queued=max_queued, start=run_jobs)
    runs = RunStore(runs_dir)
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        queue.shutdown()

    app = FastAPI(title="idlsec lab", lifespan=lifespan, version=idlsec.__version__,
                  description="Run attacks on interpretable deep learning systems and explore their "
                              "interpretations. Served by `idlsec serve`.",
                  responses={400: ERRORS, 404: ERRORS})
    app.state.engine, app.state.queue, app.state.runs = engine, queue, runs
    if allowed_hosts:  # refuse other Host headers: a web page cannot reach the API by DNS rebinding
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(IdlsecError)
    async def _idlsec_error(_request: Request, exc: IdlsecError):
        code = {NotFound: 404, ResourceError: 404, TooLarge: 413, NotImage: 415}.get(type(exc), 400)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        # the offending input is left out: it may not be JSON-serialisable (NaN, Infinity, bytes)
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "invalid")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull):
        return JSONResponse({"detail": str(exc)}, status_code=429)

    def job_or_404(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise NotFound(f"unknown job {job_id!r}")
        return job

    # --- registry and data -------------------------------------------------------------------------
    @app.get("/api/registry", response_model=schemas.Registry, tags=["registry"])
    def registry():
        """Models, datasets, interpreters and attacks registered now, with attack hyperparameters."""
        return engine.registry()

    @app.get("/api/datasets/{name}", response_model=schemas.DatasetInfo, tags=["data"])
    def dataset_info(name: str):
        """Class names and size of a dataset's test split (``error`` set when it is not available)."""
        return engine.dataset_info(name)

    @app.get("/api/datasets/{name}/images/{index}", response_model=schemas.DatasetImage, tags=["data"])
    def dataset_image(name: str, index: int):
        """One test image with its label."""
        return engine.dataset_image(name, index)

    @app.post("/api/uploads", response_model=schemas.Upload, tags=["data"],
              responses={413: ERRORS, 415: ERRORS})
    def upload(file: UploadFile = File(...)):  # noqa: B008 (FastAPI idiom)
        """Upload an image (PNG, JPEG, ...; at most 4 MiB); attack it with ``upload: id``."""
        data = file.file.read(schemas.MAX_UPLOAD_BYTES + 1)
        if len(data) > schemas.MAX_UPLOAD_BYTES:
            raise TooLarge(f"the file is larger than {schemas.MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        try:
            return engine.add_upload(data, (file.filename or "upload")[:200])
        except InputError as e:
            reason = str(e) if "too large" in str(e) or "empty" in str(e) else "it cannot be decoded"
            raise NotImage(f"{file.filename or 'the file'} is not an image ({reason}); "
                           "upload a PNG, JPEG, BMP or WebP picture") from None

    # --- jobs --------------------------------------------------------------------------------------
    @app.post("/api/jobs", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={429: ERRORS})
    def submit(req: schemas.AttackRequest):
        """Queue an attack on one image; follow it with /api/jobs/{id}/events."""
        if req.index is not None and req.dataset is None:
            req.dataset = engine.default_dataset(req.model)  # the model's first image source
        params = engine.check_attack(req)
        job = queue.submit("attack", engine.describe(req),
                           lambda jid, report: engine.run_attack(jid, req, params, report))
        return _status(queue, job)

    @app.post("/api/batches", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={429: ERRORS})
    def submit_batch(req: schemas.BatchRequest):
        """Queue an attack on n seeded images (the library's attack job); it is saved as a run under
        --runs DIR/lab/ and appears in the runs browser."""
        if runs.root is None:
            raise ConfigError("batch runs are saved as runs: start the lab with --runs DIR")
        params = engine.check_batch(req)
        label = f"batch: {req.attack} × {req.interpreter} on {req.model}, {req.n} images, eps={req.eps * 255:.3g}/255"
        job = queue.submit("batch", label, lambda jid, report: engine.run_batch(jid, req, params, runs.root, report))
        return _status(queue, job)

    @app.get("/api/jobs", response_model=list[schemas.JobStatus], tags=["jobs"])
    def list_jobs():
        """All jobs, newest first."""
        return [_status(queue, j) for j in queue.jobs()]

    @app.get("/api/jobs/{job_id}", response_model=schemas.JobStatus, tags=["jobs"])
    def get_job(job_id: str):
        return _status(queue, job_or_404(job_id))

    @app.post("/api/jobs/{job_id}/cancel", response_model=schemas.JobStatus, tags=["jobs"])
    def cancel_job(job_id: str):
        """Cancel a queued or running job (a running attack stops at its next step)."""
        job_or_404(job_id)
        return _status(queue, queue.cancel(job_id))

    @app.get("/api/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events of all jobs: state, progress, end"}})
    async def all_events(request: Request):
        """Server-sent events of every job, from now on (or after the ``Last-Event-ID`` header): ``state``,
        ``progress``, ``end``; data: JSON with ``job`` and ``kind``. One stream serves a whole page."""
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else queue.last_seq

        async def stream():
            seq, idle = start, 0
            yield "retry: 1000\n\n"
            while True:
                events = queue.all_events_since(seq)
                for s, _job, name, data in events:
                    seq = s
                    yield f"id: {s}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
                if not events:
                    idle += 1
                    if idle >= 15:
                        idle = 0
                        yield ": keep-alive\n\n"
                    await anyio.to_thread.run_sync(queue.wait_any, seq, 1.0)
                    if queue.stopped:
                        return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events: state, progress, end"}})
    async def job_events(job_id: str):
        """Server-sent events until the job ends: ``state``, ``progress``, ``end`` (data: JSON)."""
        job = job_or_404(job_id)

        async def stream():
            seq, idle = -1, 0
            while True:
                events = queue.events_since(job, seq)
                for s, name, data in events:
                    seq = s
                    yield f"id: {s}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
                    if name == "end":
                        return
                if not events:
                    idle += 1
                    if idle >= 15:
                        idle = 0
                        yield ": keep-alive\n\n"
                    # wakes as soon as the job emits (a worker thread waits on the queue's condition)
                    await anyio.to_thread.run_sync(queue.wait, job, seq, 1.0)
                    if queue.stopped:  # shutting down: the job may never end
                        await anyio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def finished_result(job_id: str, kind: str):
        """A finished job's result, or a 409 response while it is not done (400 for another kind)."""
        job = job_or_404(job_id)
        if job.kind != kind:
            raise InputError(f"job {job_id} is a {job.kind} job, not {kind}")
        if job.state != "done":
            return JSONResponse({"detail": f"job {job_id} is {job.state}"}, status_code=409)
        return job.result

    @app.get("/api/jobs/{job_id}/result", response_model=schemas.AttackResultOut, tags=["jobs"],
             responses={409: ERRORS})
    def attack_result(job_id: str):
        """The result of a finished attack job (409 while it is not done)."""
        return finished_result(job_id, "attack")

    @app.post("/api/jobs/{job_id}/compare", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={429: ERRORS})
    def compare(job_id: str, req: schemas.CompareRequest):
        """Queue the maps of several interpreters on the attack's benign and adversarial image."""
        job_or_404(job_id)
        engine.check_compare(job_id, req.interpreters)
        names = list(req.interpreters)
        job = queue.submit("compare", f"compare {', '.join(names)} on job {job_id}",
                           lambda jid, report: engine.compare(jid, job_id, names, report))
        return _status(queue, job)

    @app.get("/api/jobs/{job_id}/comparison", response_model=schemas.CompareResult, tags=["jobs"],
             responses={409: ERRORS})
    def comparison(job_id: str):
        """The result of a finished compare job (409 while it is not done)."""
        return finished_result(job_id, "compare")

    @app.get("/api/jobs/{job_id}/batch", response_model=schemas.BatchResult, tags=["jobs"],
             responses={409: ERRORS})
    def batch_result(job_id: str):
        """The run a finished batch job wrote (409 while it is not done)."""
        return finished_result(job_id, "batch")

    # --- runs --------------------------------------------------------------------------------------
    @app.get("/api/runs", response_model=list[schemas.RunInfo], tags=["runs"])
    def list_runs():
        """Runs found under --runs (folders with summary.json or results.jsonl)."""
        return runs.list()

    @app.get("/api/runs/detail", response_model=schemas.RunDetail, tags=["runs"])
    def run_detail(id: str = Query(..., max_length=1000)):
        """A run's summary, configuration, records (at most 5000) and pictures."""
        try:
            return runs.detail(id)
        except InputError as e:
            raise NotFound(str(e)) from None

    @app.get("/api/runs/examples", response_model=schemas.RunExamples, tags=["runs"])
    def run_examples(id: str = Query(..., max_length=1000), config: str | None = Query(None, max_length=100)):
        """Saved benign/adversarial images and maps of a run (at most 32), never recomputed."""
        try:
            return runs.examples(id, config)
        except InputError as e:
            raise NotFound(str(e)) from None

    @app.get("/api/runs/file", tags=["runs"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}, "description": "a picture of the run"}})
    def run_file(id: str = Query(..., max_length=1000), name: str = Query(..., max_length=300)):
        """One picture of a run (its examples.png, figures...)."""
        try:
            path, media = runs.file(id, name)
        except InputError as e:
            raise NotFound(str(e)) from None
        return FileResponse(path, media_type=media)

    # --- the single-page app ---------------------------------------------------------------------
    if static_dir is not None and (static_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="static")
    else:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def no_app():
            return ("<h1>idlsec lab</h1><p>The web app is not built: run <code>npm ci && npm run build</code> "
                    "in web/. The API is at <a href='/docs'>/docs</a>.</p>")

    return app
