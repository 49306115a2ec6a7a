"""Tests that need data say so loudly when they skip (issue 15, item 6).

A *data skip* is a skip whose reason names missing data or a missing system package: the local
mirror (``IDLSEC_MIRROR``, default ``../shared``), Debian's ``dataset-fashion-mnist`` or
``chromium``, or a dataset that could not be resolved with downloads disabled. Every such skip is
listed in a banner at the end of the run, with the fix. With ``IDLSEC_REQUIRE_DATA=1`` (set by
``.ci/run``) each one is a failure instead. The hooks are imported into ``conftest.py``.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

# reason fragment -> what to do about it
DATA_NEEDS = {
    "no local mirror": "point IDLSEC_MIRROR at the project's data/weights mirror "
                       "(default: ../shared next to the repository)",
    "dataset-fashion-mnist": "apt-get install dataset-fashion-mnist (make test does it when run as root)",
    "chromium": "apt-get install chromium (make test does it when run as root)",
    "downloads are disabled": "set IDLSEC_MIRROR, or run `make demo` once with network access to fill the cache",
}
_SEEN: Counter = Counter()


def require_data() -> bool:
    return os.environ.get("IDLSEC_REQUIRE_DATA", "") not in ("", "0")


def data_need(reason: str) -> str | None:
    """The fix for a skip reason that names missing data, or None for any other skip."""
    low = reason.lower()
    return next((fix for key, fix in DATA_NEEDS.items() if key.lower() in low), None)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and require_data():
        reason = _skip_reason(report)
        if data_need(reason):
            report.outcome = "failed"
            report.longrepr = (f"IDLSEC_REQUIRE_DATA=1 and this test needs data it could not find: {reason}"
                               f"\nfix: {data_need(reason)}")


def pytest_runtest_logreport(report):
    # on the controller too under xdist: workers' reports arrive here
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if data_need(reason):
            _SEEN[reason] += 1


def pytest_terminal_summary(terminalreporter):
    if not _SEEN:
        return
    tr = terminalreporter
    tr.write_sep("!", f"{sum(_SEEN.values())} tests SKIPPED: they need data or system packages "
                      "that are missing", red=True, bold=True)
    for reason, n in _SEEN.most_common():
        tr.write_line(f"  {n:4d} x {reason}", yellow=True, bold=True)
        tr.write_line(f"         fix: {data_need(reason)}")
    tr.write_line("  IDLSEC_REQUIRE_DATA=1 (set by .ci/run) makes these skips failures.", bold=True)
