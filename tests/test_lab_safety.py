"""The lab under hostile input (idlsec.lab.guard, app, runs, schemas): one test per attack that
worked before — a huge PNG decoded before its size check, cross-origin writes, scripts in run
folders, symlinks out of --runs, budgets smuggled in through ``params``, a server that would not
stop, a server exposed beyond loopback without a token — each asserting the status code."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import pytest

pytest.importorskip("fastapi")
import PIL.ImageFile
from fastapi.testclient import TestClient

from _lab_util import REPO, LabServer, big_png, entries, peak_rss_mb, png_bytes, wait_state
from idlsec.cli import main
from idlsec.lab import schemas
from idlsec.lab.app import create_app

UPLOAD = "/api/uploads"


def attack(**kw) -> dict:
    return {"model": "cifar10-resnet20", "upload": "0" * 16, "interpreter": "cam", "attack": "pgd", **kw}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(4, 4))
    (outside / "secret.json").write_text(json.dumps({"password": "hunter2"}))
    runs = root / "runs"
    run = runs / "run1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"n": 1, "asr": 1.0}))
    (run / "ok.png").write_bytes(png_bytes(4, 4))
    (run / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/api/jobs", '
                                  '{method: "POST"})</script></svg>')
    (run / "page.html").write_text("<script>alert(1)</script>")
    (run / "link.png").symlink_to(outside / "secret.png")
    (run / "plots").symlink_to(outside, target_is_directory=True)
    leak = runs / "leak"
    leak.mkdir()
    (leak / "summary.json").symlink_to(outside / "secret.json")
    (runs / "linked-run").symlink_to(run, target_is_directory=True)
    return runs


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app(runs, "cpu", models=entries(), run_jobs=False)) as c:
        yield c


# --- uploads: the size comes from the header, nothing is decoded ----------------------------------
@pytest.mark.parametrize("w, h, full", [(8000, 8000, True), (10_000, 10_000, True), (15_000, 15_000, True), (4097, 8, True),
                                        (8, 100_000, False), (100_000, 100_000, False)])
def test_huge_png_is_refused_from_its_header(client, monkeypatch, w, h, full):
    data = big_png(w, h, full=full)
    assert len(data) < 300_000
    decoded = []
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    t0 = time.monotonic()
    r = client.post(UPLOAD, files={"file": ("big.png", data, "image/png")})
    assert r.status_code == 413, r.text
    assert time.monotonic() - t0 < 2.0 and decoded == []
    assert "too large" in r.json()["detail"] or "larger than" in r.json()["detail"]


def test_upload_at_the_limit_and_garbage(client):
    ok = client.post(UPLOAD, files={"file": ("small.png", big_png(64, 48), "image/png")})
    assert ok.status_code == 200 and (ok.json()["width"], ok.json()["height"]) == (64, 48)
    bad = client.post(UPLOAD, files={"file": ("x.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")})
    assert bad.status_code == 415
    # a body announced larger than the upload limit is refused before it is read
    r = client.post(UPLOAD, content=b"x", headers={"content-length": str(10**9),
                                                   "content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


# --- cross-origin writes ---------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{"origin": "http://evil.example"}, {"origin": "null"},
                                     {"origin": "http://testserver.evil.example"},
                                     {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                                     {"origin": "http://testserver", "sec-fetch-site": "cross-site"}])
@pytest.mark.parametrize("method, path", [("POST", "/api/jobs"), ("POST", UPLOAD),
                                          ("POST", "/api/jobs/x/cancel"), ("POST", "/api/batches"),
                                          ("DELETE", "/api/jobs/x"), ("PUT", "/api/jobs")])
def test_cross_origin_writes_are_refused(client, headers, method, path):
    r = client.request(method, path, json=attack(), headers=headers)
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"origin": "http://testserver"}, {"sec-fetch-site": "same-origin"},
                                     {"sec-fetch-site": "none"}])
def test_same_origin_and_plain_clients_may_write(client, headers):
    r = client.post("/api/jobs", json=attack(), headers=headers)
    assert r.status_code == 404 and "unknown upload" in r.json()["detail"]  # reached the endpoint


def test_cross_origin_reads_pass_the_guard(client):
    assert client.get("/api/jobs", headers={"origin": "http://evil.example"}).status_code == 200


# --- headers: a CSP everywhere, run files never inline pages --------------------------------------
@pytest.mark.parametrize("method, path", [("GET", "/"), ("GET", "/api/registry"), ("GET", "/api/jobs/nope"),
                                          ("GET", "/openapi.json"), ("GET", "/favicon.ico"),
                                          ("POST", "/api/jobs"), ("GET", "/no/such/page")])
def test_every_response_has_a_csp_and_nosniff(client, method, path):
    r = client.request(method, path, json={} if method == "POST" else None)
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'"
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_the_built_app_has_no_inline_script():
    html = (REPO / "src" / "idlsec" / "lab" / "static" / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)


def test_favicon_and_no_cdn_swagger(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon" and r.content[:4] == b"\0\0\1\0"
    assert client.get("/docs").status_code in (404, 405) or "swagger" not in client.get("/docs").text.lower()
    assert client.get("/redoc").status_code in (404, 405) or "redoc" not in client.get("/redoc").text.lower()
    assert client.get("/openapi.json").json()["info"]["title"] == "idlsec lab"


def test_svg_from_a_run_is_a_download_and_html_is_never_served(client):
    r = client.get("/api/runs/file", params={"id": "run1", "name": "evil.svg"})
    assert r.status_code == 200
    assert r.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in r.headers["content-security-policy"] and r.headers["x-content-type-options"] == "nosniff"
    png = client.get("/api/runs/file", params={"id": "run1", "name": "ok.png"})
    assert png.status_code == 200 and "content-disposition" not in png.headers
    assert client.get("/api/runs/file", params={"id": "run1", "name": "page.html"}).status_code == 404


# --- paths stay inside --runs ------------------------------------------------------------------------
@pytest.mark.parametrize("run, name", [("run1", "link.png"), ("run1", "plots/secret.png"),
                                       ("run1", "../outside/secret.png"), ("run1", "/etc/hostname"),
                                       ("linked-run", "ok.png"), ("..", "outside/secret.png")])
def test_files_outside_runs_are_404(client, run, name):
    assert client.get("/api/runs/file", params={"id": run, "name": name}).status_code == 404


def test_symlinks_out_of_runs_are_not_listed_or_read(client):
    runs = {r["id"]: r for r in client.get("/api/runs").json()}
    assert "linked-run" not in runs
    assert runs["run1"]["images"] == ["evil.svg", "ok.png"]
    assert "hunter2" not in json.dumps(runs.get("leak", {}))
    assert "hunter2" not in client.get("/api/runs/detail", params={"id": "leak"}).text


# --- one limits table, at the top level and in params -------------------------------------------
@pytest.mark.parametrize("body", [
    attack(params={"steps": 1e9}), attack(params={"steps": 10**9}), attack(params={"steps": "1e9"}),
    attack(params={"warmup_steps": 10**6}), attack(attack="quscore", params={"pop_size": 10**6}),
    attack(attack="quscore", params={"max_queries": 10**9}), attack(attack="quscore", params={"mi_steps": 10**7}),
    attack(attack="quscore", params={"square_queries": float("inf")}), attack(params={"steps": True}),
    attack(params={"steps": -5}), attack(steps=schemas.MAX_STEPS + 1)])
def test_budgets_beyond_the_limits_are_refused(client, body):
    r = client.post("/api/jobs", json=body) if "inf" not in str(body) else client.post(
        "/api/jobs", content=json.dumps(body).replace("Infinity", "1e999"),
        headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", [
    {"n": schemas.MAX_BATCH_IMAGES + 1}, {"params": {"steps": 1e9}}, {"params": {"warmup_steps": 10**6}},
    {"batch_size": 10**4}])
def test_batch_budgets_beyond_the_limits_are_refused(client, body):
    req = {"model": "cifar10-resnet20", "interpreter": "cam", "attack": "pgd", **body}
    assert client.post("/api/batches", json=req).status_code == 422


def test_budgets_at_the_limits_pass_the_limits(client):
    for key, value in schemas.LIMITS.items():
        schemas.check_limits({key: value})
        with pytest.raises(ValueError, match=key):
            schemas.check_limits({key: value + 1})
    r = client.post("/api/jobs", json=attack(attack="quscore", params={"max_queries": schemas.MAX_QUERIES}))
    assert r.status_code == 404 and "unknown upload" in r.json()["detail"]  # past validation


def test_registry_publishes_the_limits(client):
    limits = client.get("/api/registry").json()["limits"]
    assert limits["max_steps"] == schemas.LIMITS["steps"]


# --- the token ----------------------------------------------------------------------------------------
def test_token_is_required_on_every_request():
    token = "t0k3n-" + "x" * 20
    with TestClient(create_app(None, "cpu", models=entries(), run_jobs=False, token=token)) as c:
        assert c.get("/api/jobs").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/api/jobs", headers={"x-idlsec-token": "wrong"}).status_code == 401
        assert c.get("/api/jobs", headers={"x-idlsec-token": token}).status_code == 200
        assert c.post("/api/jobs", json=attack(), headers={"x-idlsec-token": token}).status_code == 404
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
        r = c.get(f"/?token={token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/api/jobs").status_code == 200  # the cookie now set in the client


@pytest.mark.parametrize("argv, message", [
    (["serve", "--host", "0.0.0.0"], "--token"), (["serve", "--host", "192.0.2.1", "--token", "short"], "16"),
])
def test_serve_beyond_loopback_needs_a_token(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


# --- a real server: memory under a huge upload, SIGTERM with a tab open ----------------------------
def test_real_server_memory_and_graceful_shutdown(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    s = LabServer(runs)
    try:
        before = peak_rss_mb(s.proc.pid)
        data = big_png(8000, 8000)  # under PIL's own bomb limit: the old server decoded it (+670 MiB)
        t0 = time.monotonic()
        r = s.client.post(UPLOAD, files={"file": ("big.png", data, "image/png")})
        seconds = time.monotonic() - t0
        assert r.status_code == 413 and seconds < 2.0
        assert peak_rss_mb(s.proc.pid) - before < 50  # decoded as RGB: 190 MB at least
        # a tab: the event stream open; a long job running; then SIGTERM
        up = s.client.post(UPLOAD, files={"file": ("red.png", png_bytes(), "image/png")}).json()
        job = s.client.post("/api/jobs", json=attack(upload=up["id"], steps=10_000)).json()["id"]
        stream_ended = threading.Event()

        def tab():
            import httpx

            try:
                with httpx.stream("GET", f"{s.url}/api/events", timeout=30.0) as resp:
                    for _ in resp.iter_lines():
                        pass
            except httpx.HTTPError:
                pass
            stream_ended.set()

        threading.Thread(target=tab, daemon=True).start()
        wait_state(s.client.get, job, ("running",))
        seconds = s.stop(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down: -15 after a clean shutdown
        assert s.proc.returncode in (0, -signal.SIGTERM), s.output()
        assert seconds < 5.0 and stream_ended.wait(1.0)
    finally:
        s.stop(signal.SIGKILL)
    s = LabServer(runs)
    try:
        state = s.client.get(f"/api/jobs/{job}").json()
        # marked by the shutdown itself, not by the next start ("... while the job was running")
        assert state["state"] == "interrupted" and "before the job ended" in state["error"]
        assert s.client.post(f"/api/jobs/{job}/rerun").status_code == 202
    finally:
        s.stop(signal.SIGKILL)
