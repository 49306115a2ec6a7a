"""The lab's OpenAPI schema tells the truth: schemathesis (every check, positive and negative data,
stateful links) against the app in-process, through its ASGI transport. The app is the default lab
(the zoo's models, those without weights answer 404), with jobs queued but never run (no model
work), so a run takes seconds and needs no data mirror (a missing dataset answers 404)."""

from __future__ import annotations

import collections
import time

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
import urllib3  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import events, from_schema  # noqa: E402

from idlsec.lab.app import create_app  # noqa: E402

MAX_EXAMPLES = 6
# a schema cannot say "a decodable image": random bytes are schema-valid uploads that answer 415
UPLOAD_STATUSES = ["2xx", "404", "409", "413", "415", "429"]


@pytest.fixture(autouse=True)
def _read1():
    """schemathesis reads event streams with urllib3 2's ``read1``; the constraints pin urllib3 1.26."""
    if hasattr(urllib3.HTTPResponse, "read1"):
        yield
        return
    urllib3.HTTPResponse.read1 = lambda self, amt=None, decode_content=None: self.read(amt, decode_content)
    yield
    del urllib3.HTTPResponse.read1


def run_schemathesis(app, max_examples: int = MAX_EXAMPLES):
    """(requests sent, {(operation, check, title): example}, engine errors)."""
    config = SchemathesisConfig.from_dict({
        "seed": 1, "request-timeout": 2, "max-stream-events": 1, "continue-on-failure": True,
        "cache": {"enabled": False},  # no .schemathesis/ folder: every run is the same run
        "generation": {"max-examples": max_examples},
        "operations": [{"include-path": "/api/uploads",
                        "checks": {"positive_data_acceptance": {"expected-statuses": UPLOAD_STATUSES}}}]})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    sent, failures, errors = 0, {}, []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        key = (event.recorder.label, check.name, check.failure_info.failure.title)
                        failures.setdefault(key, check.failure_info.code_sample)
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            errors.append(str(getattr(event, "info", None) or getattr(event, "exception", event))[:500])
    return sent, failures, errors


def test_schemathesis_finds_no_failure(tmp_path):
    app = create_app(tmp_path / "runs", "cpu", run_jobs=False)
    t0 = time.monotonic()
    sent, failures, errors = run_schemathesis(app)
    report = "\n".join(f"{k}:\n    {v}" for k, v in failures.items())
    assert not errors, "\n".join(errors)
    assert not failures, f"{len(failures)} failure(s):\n{report}"
    # it reached every operation, with enough requests to mean something
    assert sent >= 300, sent
    print(f"schemathesis: {sent} requests, no failure, {time.monotonic() - t0:.1f} s")


def test_schema_names_are_enums():
    app = create_app(None, "cpu", run_jobs=False)
    schema = app.openapi()
    req = schema["components"]["schemas"]["AttackRequest"]["properties"]
    from idlsec.attacks import ATTACKS
    from idlsec.interpreters import INTERPRETERS
    from idlsec.models import model_names

    assert req["model"]["enum"] == model_names()  # the zoo, whatever weights this machine has
    assert req["attack"]["enum"] == list(ATTACKS) and req["interpreter"]["enum"] == list(INTERPRETERS)
    dataset = schema["paths"]["/api/datasets/{name}"]["get"]["parameters"][0]["schema"]
    assert dataset["enum"] == ["cifar10", "fashion-mnist"]
    counts = collections.Counter(k for b in schema["components"]["schemas"]["AttackRequest"]["allOf"]
                                 for k in b)
    assert counts["oneOf"] == 3  # model groups, attacks, index-or-upload


def test_methods_answer_with_allow():
    from fastapi.testclient import TestClient

    with TestClient(create_app(None, "cpu", run_jobs=False)) as c:
        r = c.options("/api/jobs")
        assert r.status_code == 204 and r.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        r = c.put("/api/jobs")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        r = c.delete("/api/jobs/abc/cancel")
        assert r.status_code == 405 and r.headers["allow"] == "OPTIONS, POST"
        r = c.head("/api/jobs")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-type"] == "application/json"
        r = c.head("/api/events")  # an event stream: its headers, then it ends
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert c.head("/api/jobs/nope").status_code == 404
        assert c.post("/api/nope").status_code == 404 and c.get("/api").status_code == 404
        assert c.get("/api/datasets/nope").status_code == 404
        r = c.post("/index.html")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS"
