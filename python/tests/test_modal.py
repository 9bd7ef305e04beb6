"""The package against the fake Modal server (started by
tests/python/modal.test): an isolated filesystem, so the workdir goes in
at the start and comes back by sync_out() or at the end of a one-shot
run; and no sandbox outlives its session."""

import gc
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import atp
from atp.compat import open_atp as oa
from conftest import wait_until

FAKE = os.environ.get("ATP_FAKE_MODAL")
STATE = os.environ.get("ATP_FAKE_STATE")
pytestmark = pytest.mark.skipif(
    not FAKE or not STATE or not os.environ.get("ATP_CONFIG"),
    reason="needs the fake Modal server: run through tests/python/modal.test")


def stats():
    p = subprocess.run([os.environ.get("ATP_PYTHON", "/usr/bin/python3"),
                        FAKE, "ctl", "--state", STATE, "stats"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def none_alive():
    return wait_until(lambda: (lambda d: d["alive"] == 0 and
                               d["procs"] == 0)(stats()), 15, 0.2)


@pytest.fixture
def modal():
    be = atp.open(backend="modal")
    yield be
    be.close()
    assert none_alive(), "a sandbox is still alive"


def test_isolated_workdir_push_exec_and_sync_out(modal, wd):
    (wd / "input").write_text("from the host\n")
    with modal.session(wd) as s:
        assert s.start_result.push_bytes > 0
        r = s.exec("cat input; echo made > output").wait()
        assert r.stdout == "from the host\n"
        assert not (wd / "output").exists()     # isolated until pulled
        s.sync_out()
        assert (wd / "output").read_text() == "made\n"
        (wd / "input").write_text("changed\n")
        s.sync_in()
        assert s.exec("cat input").wait().stdout == "changed\n"


def test_streaming_timeout_and_events(modal, wd):
    events = []
    with modal.session(wd, on_event=events.append) as s:
        c = s.exec("echo a; echo b >&2; echo c")
        assert list(c.stream(stderr=True)) == [
            ("stdout", "a"), ("stderr", "b"), ("stdout", "c")] or \
            sorted(c.stream(stderr=True)) == [("stderr", "b"),
                                              ("stdout", "a"),
                                              ("stdout", "c")]
        with pytest.raises(atp.CommandTimeout) as ei:
            s.exec("echo partial; sleep 60", timeout=2).wait()
        assert ei.value.result.stdout == "partial\n"
    assert "provisioned" in [e.type for e in events]


def test_one_shot_run_pulls_the_edits_back(modal, wd):
    r = modal.run("echo edited > f; echo done", wd, timeout=60)
    assert r.ok and r.stdout == "done\n"
    assert (wd / "f").read_text() == "edited\n"
    assert r.pull_bytes > 0 and r.provision_s > 0


def test_garbage_collection_terminates_the_sandbox(modal, wd):
    s = modal.session(wd)
    s.exec("true").wait()
    assert stats()["alive"] == 1
    with pytest.warns(ResourceWarning):
        del s
        gc.collect()
    assert none_alive()


def test_cancel_from_another_thread(modal, wd):
    with modal.session(wd) as s:
        c = s.exec("echo started; sleep 120", timeout=300)
        assert next(iter(c.stream())) == "started"
        threading.Thread(target=c.cancel).start()
        t0 = time.monotonic()
        with pytest.raises(atp.Cancelled):
            c.wait()
        assert time.monotonic() - t0 < 30


def test_compat_run_keeps_modal_edits(wd):
    b = oa.AtpBackend(backend="modal")
    r = b.run(wd, "echo kept > g", timeout_s=60)
    assert r.exit_code == 0 and (wd / "g").read_text() == "kept\n"
    b.close()
    assert none_alive()


def test_missing_credentials(tmp_path, wd, monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with atp.open(backend="modal") as be:
        with pytest.raises(atp.MissingCredentials) as ei:
            be.session(wd)
    assert isinstance(ei.value, atp.ComputeError)
    b = oa.AtpBackend(backend="modal")
    with pytest.raises(oa.MissingCredentials):
        b.session(wd)
    b.close()
