"""Shared fixtures, and TAP output for make check.

With ATP_TAP=1 (set by the tests/python/*.test wrappers) every test is
reported as a TAP line on descriptor $ATP_TAP_FD (default 1), the plan
first; the wrappers send pytest's own report elsewhere.
"""

import os
import sys
import time
import traceback

import pytest

_tap = os.environ.get("ATP_TAP") == "1"
_n = 0
_failed_phase = {}
_planned = False


_fd = int(os.environ.get("ATP_TAP_FD", "1"))


def _out(s):
    os.write(_fd, (s + "\n").encode("utf-8", "replace"))


def pytest_collection_finish(session):
    global _planned
    if _tap:                     # after -k and -m have deselected
        _out(f"1..{len(session.items)}")
        _planned = True


def pytest_collectreport(report):
    if _tap and report.failed:
        _out(f"Bail out! cannot collect {report.nodeid}: "
             + str(report.longrepr).splitlines()[-1])


def pytest_runtest_logreport(report):
    if not _tap:
        return
    st = _failed_phase.setdefault(report.nodeid, [])
    st.append(report)


def pytest_runtest_logfinish(nodeid, location):
    global _n
    if not _tap:
        return
    _n += 1
    reports = _failed_phase.pop(nodeid, [])
    name = nodeid.split("::", 1)[-1]
    failed = [r for r in reports if r.failed]
    skipped = [r for r in reports if r.skipped]
    if failed:
        _out(f"not ok {_n} - {name}")
        for r in failed:
            text = str(r.longrepr)
            for line in text.splitlines()[-60:]:
                _out("# " + line)
            for sec, content in r.sections:
                if content.strip():
                    _out(f"# --- {sec}")
                    for line in content.splitlines()[-20:]:
                        _out("# " + line)
    elif skipped:
        r = skipped[0]
        reason = r.longrepr[2] if isinstance(r.longrepr, tuple) else ""
        _out(f"ok {_n} - {name} # SKIP {reason}")
    else:
        _out(f"ok {_n} - {name}")


def pytest_sessionfinish(session, exitstatus):
    if _tap and not _planned:
        _out(f"Bail out! pytest stopped before running any test "
             f"(exit status {exitstatus})")


# ---------------------------------------------------------------- helpers

def wait_until(pred, timeout=20.0, interval=0.02):
    """Poll @pred until it is true or @timeout seconds pass; returns its
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def local():
    import atp
    be = atp.open(backend="local")
    yield be
    be.close()


@pytest.fixture
def wd(tmp_path):
    d = tmp_path / "wd"
    d.mkdir()
    return d
