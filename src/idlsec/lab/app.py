"""The lab's HTTP API (FastAPI) and the built single-page app (``lab/static``).

``create_app(runs_dir, device)`` returns the ASGI app that ``idlsec serve`` runs. Every endpoint
validates its input: pydantic answers 422 for malformed requests, IdlsecError becomes 400 (404 for
unknown resources and missing data, 409 for a state that refuses the request, 413/415 for uploads,
429 for a full queue), with a message. The schema (``lab/openapi.py``) states the name sets and the
rules across fields, so a request it accepts is not refused with a 400; ``lab/methods.py`` answers
405/OPTIONS/HEAD with their ``Allow`` header.

Persistence: with ``--runs DIR`` jobs (requests, states, results), the tensors a comparison needs
and uploads live in ``DIR/.lab/lab.sqlite`` (``store.LabStore``); a restarted lab lists them
again, and a job the previous server left queued or running is 'interrupted' and can be re-run
(``POST /api/jobs/{id}/rerun``). Safety: ``guard.Guard`` (origin check, token, body size, CSP);
uploads are measured from their header before any decoding; run files are served only from
inside ``--runs`` (symlinks resolved), SVG as attachments; no Swagger UI (it would load from a
CDN): the schema is at /openapi.json."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import warnings
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

import idlsec

from ..errors import IdlsecError, InputError, ResourceError
from . import schemas
from .engine import Conflict, Engine, NotFound
from .guard import Guard
from .jobs import FINISHED, Job, JobQueue, QueueFull
from .methods import Methods
from .models import LabModels, ModelEntry
from .openapi import dataset_names, lab_openapi
from .runs import RunStore
from .store import LabStore

STATIC = Path(__file__).parent / "static"
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp"}  # run files shown inline: inert rasters only
ERRORS = {"model": schemas.Message}


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


def upload_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image's header; PIL decodes nothing until the pixels are asked
    for. NotImage when the header is not an image's, TooLarge beyond ``MAX_UPLOAD_PIXELS`` a side
    (which also bounds what a decompression bomb could decode to)."""
    from PIL import Image

    limit = schemas.MAX_UPLOAD_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"the image is larger than {limit}x{limit} pixels") from None
    except Exception:  # noqa: BLE001 - any header PIL cannot read is not an image we take
        raise NotImage("cannot be decoded") from None
    if width > limit or height > limit:
        raise TooLarge(f"image of {width}x{height} pixels is too large (max {limit}x{limit})")
    return width, height


@functools.lru_cache(maxsize=1)
def favicon() -> bytes:
    """A 32x32 icon: a heat map's warm square on the lab's dark ground (drawn, not shipped)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (32, 32), (24, 28, 38, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((6, 6, 25, 25), fill=(240, 90, 40, 255))
    draw.rectangle((11, 11, 20, 20), fill=(255, 210, 60, 255))
    buf = io.BytesIO()
    img.save(buf, format="ICO", sizes=[(32, 32)])
    return buf.getvalue()


def create_app(runs_dir: str | Path | None = None, device: str = "cpu", *, static_dir: Path | None = STATIC,
               max_queued: int = schemas.MAX_QUEUED, run_jobs: bool = True,
               allowed_hosts: list[str] | None = None, models: list[ModelEntry] | None = None,
               token: str | None = None) -> FastAPI:
    """``models``: what the lab offers (``ModelEntry`` from ``--model``/``--models-file``, loaded
    now); None: every zoo model whose weights are at hand. ``token``: required on every request
    (see ``guard``). With ``runs_dir`` the lab's jobs and uploads persist in its ``.lab/``."""
    engine = Engine(device, models=LabModels(models, device))
    store = LabStore(Path(runs_dir) / ".lab" / "lab.sqlite" if runs_dir else None)
    queue = JobQueue(max_queued=max_queued, start=run_jobs, store=store)
    runs = RunStore(runs_dir)
    for uid, filename, data in store.uploads():  # engine.add_upload's record, restored
        engine._uploads[uid] = {"bytes": data, "filename": filename}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await anyio.to_thread.run_sync(queue.shutdown)

    app = FastAPI(title="idlsec lab", lifespan=lifespan, version=idlsec.__version__,
                  description="Run attacks on interpretable deep learning systems and explore their "
                              "interpretations. Served by `idlsec serve`.",
                  responses={400: ERRORS, 404: ERRORS}, docs_url=None, redoc_url=None)
    app.state.engine, app.state.queue, app.state.runs, app.state.store = engine, queue, runs, store
    app.add_middleware(Methods, app=app)  # 405 with Allow, OPTIONS and HEAD for every path
    if allowed_hosts:  # refuse other Host headers: a web page cannot reach the API by DNS rebinding
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(Guard, token=token)  # added last: it runs first

    @app.exception_handler(IdlsecError)
    async def _idlsec_error(_request: Request, exc: IdlsecError):
        code = {NotFound: 404, ResourceError: 404, Conflict: 409, TooLarge: 413, NotImage: 415}.get(type(exc), 400)
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

    def openapi() -> dict:  # FastAPI's schema with the lab's name sets and rules (lab/openapi.py)
        if app.openapi_schema is None:
            base = FastAPI.openapi(app)
            app.openapi_schema = lab_openapi(base, engine.models.schema_models(),
                                             dataset_names(engine.models.folders))
        return app.openapi_schema

    app.openapi = openapi

    def dataset_or_404(name: str) -> str:
        if name not in dataset_names(engine.models.folders):
            raise NotFound(f"unknown dataset {name!r}; valid: {', '.join(dataset_names(engine.models.folders))}")
        return name

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
        return engine.dataset_info(dataset_or_404(name))

    @app.get("/api/datasets/{name}/images/{index}", response_model=schemas.DatasetImage, tags=["data"])
    def dataset_image(name: str, index: int):
        """One test image with its label."""
        return engine.dataset_image(dataset_or_404(name), index)

    @app.post("/api/uploads", response_model=schemas.Upload, tags=["data"],
              responses={413: ERRORS, 415: ERRORS})
    def upload(file: UploadFile = File(...)):  # noqa: B008 (FastAPI idiom)
        """Upload an image (PNG, JPEG, ...; at most 4 MiB); attack it with ``upload: id``."""
        data = file.file.read(schemas.MAX_UPLOAD_BYTES + 1)
        if len(data) > schemas.MAX_UPLOAD_BYTES:
            raise TooLarge(f"the file is larger than {schemas.MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        filename = (file.filename or "upload")[:200]
        try:
            if data:
                upload_size(data)  # before any decoding
            out = engine.add_upload(data, filename)
        except (InputError, NotImage) as e:
            reason = str(e) if "too large" in str(e) or "empty" in str(e) else "it cannot be decoded"
            raise NotImage(f"{file.filename or 'the file'} is not an image ({reason}); "
                           "upload a PNG, JPEG, BMP or WebP picture") from None
        store.add_upload(out["id"], filename, data)
        return out

    # --- jobs --------------------------------------------------------------------------------------
    @app.post("/api/jobs", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={429: ERRORS})
    def submit(req: schemas.AttackRequest):
        """Queue an attack on one image; follow it with /api/jobs/{id}/events."""
        return _status(queue, submit_attack(req))

    def submit_attack(req: schemas.AttackRequest) -> Job:
        if req.index is not None and req.dataset is None:
            req.dataset = engine.default_dataset(req.model)  # the model's first image source
        params = engine.check_attack(req)

        def work(jid, report):
            out = engine.run_attack(jid, req, params, report)
            adv = engine._adversarial.get(jid)  # what a comparison needs, kept for a later server
            if adv is not None:
                store.put_tensors(jid, {k: v for k, v in adv.items() if isinstance(v, str)},
                                  {k: v for k, v in adv.items() if not isinstance(v, str)})
            return out

        return queue.submit("attack", engine.describe(req), work, request=req.model_dump(mode="json"))

    @app.post("/api/batches", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={409: ERRORS, 429: ERRORS})
    def submit_batch(req: schemas.BatchRequest):
        """Queue an attack on n seeded images (the library's attack job); it is saved as a run under
        --runs DIR/lab/ and appears in the runs browser (409 when the lab has no --runs)."""
        return _status(queue, submit_batch_job(req))

    def submit_batch_job(req: schemas.BatchRequest) -> Job:
        params = engine.check_batch(req)
        if runs.root is None:
            raise Conflict("batch runs are saved as runs: start the lab with --runs DIR")
        label = f"batch: {req.attack} × {req.interpreter} on {req.model}, {req.n} images, eps={req.eps * 255:.3g}/255"
        return queue.submit("batch", label, lambda jid, report: engine.run_batch(jid, req, params, runs.root, report),
                            request=req.model_dump(mode="json"))

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

    @app.post("/api/jobs/{job_id}/rerun", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={409: ERRORS, 429: ERRORS})
    def rerun_job(job_id: str):
        """Queue a new job with the request of an ended one (an 'interrupted' job, typically),
        validated again against what the lab offers now (409 while the job is still active)."""
        job = job_or_404(job_id)
        if job.state not in FINISHED:
            return JSONResponse({"detail": f"job {job_id} is {job.state}"}, status_code=409)
        request = queue.request(job)
        if request is None:
            raise Conflict(f"job {job_id} has no saved request to run again")
        if job.kind == "attack":
            new = submit_attack(schemas.AttackRequest.model_validate(request))
        elif job.kind == "batch":
            new = submit_batch_job(schemas.BatchRequest.model_validate(request))
        else:
            new = submit_compare(request["source"], schemas.CompareRequest.model_validate(
                {"interpreters": request["interpreters"]}))
        return _status(queue, new)

    @app.get("/api/events", tags=["jobs"],
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events of all jobs: state, progress, end"}})
    async def all_events(request: Request):
        """Server-sent events of every job, from now on (or after the ``Last-Event-ID`` header): ``state``,
        ``progress``, ``end``; data: JSON with ``job`` and ``kind``. One stream serves a whole page."""
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else queue.last_seq
        if start > queue.last_seq:  # an id from before a restart: all this server has
            start = 0

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
                    if queue.stopped and not queue.events_since(job, seq):  # shutting down
                        return

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def finished_result(job_id: str, kind: str):
        """A finished job's result, or a 409 response while it is not done (404 for another kind)."""
        job = job_or_404(job_id)
        if job.kind != kind:
            raise NotFound(f"job {job_id} is a {job.kind} job: it has no {kind} result")
        if job.state != "done":
            return JSONResponse({"detail": f"job {job_id} is {job.state}"}, status_code=409)
        return queue.result(job)

    @app.get("/api/jobs/{job_id}/result", response_model=schemas.AttackResultOut, tags=["jobs"],
             responses={409: ERRORS})
    def attack_result(job_id: str):
        """The result of a finished attack job (409 while it is not done)."""
        return finished_result(job_id, "attack")

    @app.post("/api/jobs/{job_id}/compare", response_model=schemas.JobStatus, status_code=202, tags=["jobs"],
              responses={409: ERRORS, 429: ERRORS})
    def compare(job_id: str, req: schemas.CompareRequest):
        """Queue the maps of several interpreters on the attack's benign and adversarial image (409
        while the job has no adversarial example: not a finished attack, or expired)."""
        job_or_404(job_id)
        return _status(queue, submit_compare(job_id, req))

    def submit_compare(job_id: str, req: schemas.CompareRequest) -> Job:
        if job_id not in engine._adversarial:  # an attack of an earlier server: its saved tensors
            saved = store.get_tensors(job_id)
            if saved is not None:
                engine._adversarial[job_id] = {**saved[0], **saved[1]}
        engine.check_compare(job_id, req.interpreters)
        names = list(req.interpreters)
        return queue.submit("compare", f"compare {', '.join(names)} on job {job_id}",
                            lambda jid, report: engine.compare(jid, job_id, names, report),
                            request={"source": job_id, "interpreters": names})

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
        headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"}
        if media not in INLINE_TYPES:  # SVG (scripts) and anything else: a download, never a page
            headers["Content-Disposition"] = "attachment"
        return FileResponse(path, media_type=media, headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon_ico():
        return Response(favicon(), media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    # --- the single-page app ---------------------------------------------------------------------
    if static_dir is not None and (static_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static_dir, html=True), name="static")
    else:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def no_app():
            return ("<h1>idlsec lab</h1><p>The web app is not built: run <code>npm ci && npm run build</code> "
                    "in web/. The API's schema is at <a href='/openapi.json'>/openapi.json</a>.</p>")

    return app
