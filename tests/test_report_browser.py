"""The HTML report renders in headless Chromium from disk, with every table and gallery image."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from _bench_util import fake_run
from idlsec.report.build import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--mute-audio"]


def _chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], check=False,
                          capture_output=True, text=True, timeout=90)


def test_report_renders_in_chromium(tmp_path):
    fake_run(tmp_path / "run", n=4, gallery=3)
    html = write_report(tmp_path / "run")["html"]
    uri = html.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", uri)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    expected = 4 * 3 * 4  # 4 configurations x 3 images x 4 tiles
    assert attrs["data-tiles-expected"] == str(expected)
    assert attrs.get("data-tiles-loaded") == str(expected), "the load handler did not see every tile decode"
    assert attrs.get("data-tables") == "7"
    assert dom.stdout.count("<tr>") >= 6 + 4
    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1600", "--hide-scrollbars", uri)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = torch.from_numpy(np.array(Image.open(shot).convert("RGB"))).float()
    assert pixels.std() > 20  # not a blank page: text, tables and plots are drawn
