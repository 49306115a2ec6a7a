"""Helpers of the lab's safety and persistence tests: a lab on a random-weights model (no data
mirror needed: images come as uploads), cheap PNGs of any size, and `idlsec serve` as a real
process (to kill it, signal it and measure its memory)."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MODEL = "cifar10-resnet20"


def entries():
    from idlsec.lab.models import ModelEntry

    return [ModelEntry(MODEL, options={"weights": "random"})]


def png_bytes(w=32, h=32, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def big_png(w: int, h: int, *, full: bool = True) -> bytes:
    """A valid 1-bit grayscale PNG of w x h black pixels, made without a w x h buffer: all-zero
    rows compress to almost nothing (10000 x 10000: ~12 KB; decoded as RGB: 300 MB).
    ``full=False``: one row of data only (a header that claims the size; for sizes never decoded)."""
    row = b"\x00" * (1 + (w + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(h if full else 1)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class LabServer:
    """`python -m idlsec serve` on a free port over ``runs``, the random-weights model."""

    def __init__(self, runs: Path, *extra: str, timeout: float = 180.0):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.log = open(runs.parent / f"serve-{self.port}.log", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "idlsec", "serve", "--port", str(self.port), "--runs", str(runs),
             "--model", MODEL, "--weights", "random", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.client = httpx.Client(base_url=self.url, timeout=30.0)
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"idlsec serve exited {self.proc.returncode}: {self.output()}")
            try:
                if self.client.get("/api/jobs").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"idlsec serve did not start in {timeout} s: {self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self, sig=signal.SIGKILL, timeout: float = 30.0) -> float:
        """Send ``sig``; return the seconds until the process exited."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        return time.monotonic() - t0


def wait_state(get, job_id: str, states, timeout: float = 120.0) -> dict:
    """Poll ``get(f"/api/jobs/{id}")`` until the job's state is in ``states``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = get(f"/api/jobs/{job_id}").json()
        if s["state"] in states:
            return s
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s (now {s['state']})")
