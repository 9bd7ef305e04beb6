"""The package against a real dockerd (started by tests/python/docker.test,
which sets ATP_CONFIG and DOCKER_SOCK): what a user of containers would
notice, above all that none is left behind."""

import gc
import http.client
import json
import os
import socket
import threading
import time
import urllib.parse

import pytest

import atp
from atp.compat import open_atp as oa
from conftest import wait_until

SOCK = os.environ.get("DOCKER_SOCK")
pytestmark = pytest.mark.skipif(
    not SOCK or not os.environ.get("ATP_CONFIG"),
    reason="needs a dockerd: run through tests/python/docker.test")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def containers():
    """Every container atp labelled, in any state (as `docker ps -a`)."""
    q = urllib.parse.quote(json.dumps({"label": ["org.atp.run"]}))
    c = _UnixHTTP(SOCK)
    c.request("GET", f"/containers/json?all=1&filters={q}")
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def none_left():
    return wait_until(lambda: containers() == [], 30)


@pytest.fixture
def docker():
    be = atp.open(backend="docker")
    yield be
    be.close()
    assert none_left(), f"containers left: {containers()}"


def test_the_backend_is_docker(docker):
    assert docker.plugin == "docker"
    docker.check()


def test_stream_is_live_in_a_container(docker, wd):
    with docker.session(wd) as s:
        assert len(containers()) == 1
        c = s.exec("for i in 1 2 3; do echo line$i; "
                   "while [ ! -e seen$i ]; do sleep 0.05; done; done",
                   timeout=120)
        got = []
        for line in c.stream():
            got.append(line)
            assert not c.done()
            (wd / ("seen" + line[4:])).touch()   # the bind mount
        assert c.wait().ok and got == ["line1", "line2", "line3"]


def test_timeout_keeps_output_and_the_container(docker, wd):
    with docker.session(wd) as s:
        with pytest.raises(atp.CommandTimeout) as ei:
            s.exec("echo before; sleep 60", timeout=2).wait()
        assert ei.value.result.stdout == "before\n"
        assert s.exec("echo after").wait().stdout == "after\n"


def test_cancel_from_another_thread(docker, wd):
    with docker.session(wd) as s:
        c = s.exec("echo started; sleep 120", timeout=300)
        assert next(iter(c.stream())) == "started"
        t0 = time.monotonic()
        threading.Thread(target=c.cancel).start()
        with pytest.raises(atp.Cancelled):
            c.wait()
        assert time.monotonic() - t0 < 30


def test_exception_in_a_with_block_leaves_no_container(docker, wd):
    with pytest.raises(ZeroDivisionError):
        with docker.session(wd) as s:
            s.exec("sleep 120", timeout=300)
            assert len(containers()) == 1
            1 / 0
    assert none_left()


def test_garbage_collection_leaves_no_container(docker, wd):
    s = docker.session(wd)
    assert s.exec("echo hi").wait().stdout == "hi\n"
    assert len(containers()) == 1
    with pytest.warns(ResourceWarning):
        del s
        gc.collect()
    assert none_left()


def test_concurrent_sessions_from_threads(docker, tmp_path):
    n = int(os.environ.get("ATP_PY_DOCKER_SESSIONS", "32"))
    t0 = time.monotonic()
    out = [None] * n
    errors = []

    def work(i):
        try:
            d = tmp_path / f"wd{i}"
            d.mkdir()
            with docker.session(d, env={"N": str(i)}) as s:
                r = s.exec('echo "$N" > f; cat f').wait()
                out[i] = r.stdout
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    assert not errors, [repr(e) for e in errors[:3]]
    assert out == [f"{i}\n" for i in range(n)]
    assert none_left()
    print(f"{n} docker sessions from threads: {time.monotonic() - t0:.1f} s")


def test_execs_leak_no_descriptors(docker, wd):
    with docker.session(wd) as s:
        for _ in range(5):
            s.exec("true").wait()
        fds = len(os.listdir("/proc/self/fd"))
        for i in range(100):
            assert s.exec(f"echo {i}").wait().stdout == f"{i}\n"
        assert len(os.listdir("/proc/self/fd")) == fds


def test_compat_backend_on_docker(wd):
    b = oa.AtpBackend(backend="docker")
    r = b.run(wd, "echo edit > f; echo done", timeout_s=60)
    assert (r.exit_code, r.stdout) == (0, "done")
    assert (wd / "f").read_text() == "edit\n"
    with b.session(wd, timeout_s=60) as s:
        with pytest.raises(oa.CommandTimeout) as ei:
            s.exec("echo p; sleep 60", timeout_s=2).wait()
        assert ei.value.result.stdout == "p"
    b.close()
    assert none_left()


def test_a_missing_image_is_image_unavailable(tmp_path, wd):
    ini = tmp_path / "atp.ini"
    ini.write_text(f"[atp]\nbackend = docker\n[backend.docker]\n"
                   f"socket = unix://{SOCK}\nimage = atp-no-such-image:1\n")
    with atp.open(config=ini) as be:
        with pytest.raises(atp.ImageUnavailable) as ei:
            be.session(wd)
    assert "atp-no-such-image" in str(ei.value)
    assert none_left()
