"""atp.compat.open_atp: open-atp's ComputeBackend contract, method for
method and exception for exception, over the local backend."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import atp
from atp.compat import open_atp as oa


@pytest.fixture
def backend():
    b = oa.AtpBackend(backend="local")
    yield b
    b.close()


def test_backend_members(backend):
    assert backend.name == "local"
    assert isinstance(backend.wallclock_overhead_s, float)
    assert backend.wallclock_overhead_s > 0
    assert backend.test() is True


def test_session_exec_stream_wait(backend, wd):
    with backend.session(wd, timeout_s=60, env={"X": "1"}) as s:
        assert isinstance(s, oa.AtpSession)
        h = s.exec("echo $X; echo two; echo err >&2", timeout_s=30,
                   env={"Y": "2"})
        assert isinstance(h, oa.AtpCommandHandle)
        assert list(h.stream()) == ["1", "two"]
        r = h.wait()
    assert isinstance(r, oa.CommandResult)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "1\ntwo", "err\n")
    assert r.duration_s > 0


def test_backend_env_is_under_the_session_env(wd):
    b = oa.AtpBackend(backend="local", env={"A": "backend", "B": "b"})
    with b.session(wd, env={"A": "session"}) as s:
        assert s.exec('echo "$A $B"').wait().stdout == "session b"
    b.close()


def test_run_returns_a_command_result_and_keeps_edits(backend, wd):
    r = backend.run(wd, "echo made > f; exit 7", timeout_s=30)
    assert r.exit_code == 7
    assert (wd / "f").read_text() == "made\n"


def test_command_timeout_carries_the_partial_result(backend, wd):
    with backend.session(wd, timeout_s=60) as s:
        with pytest.raises(oa.CommandTimeout) as ei:
            s.exec("echo partial; sleep 30", timeout_s=1).wait()
    e = ei.value
    assert e.result.stdout == "partial"
    assert e.result.exit_code == oa.TIMEOUT_EXIT_CODE
    # Not an infrastructure error, as in open-atp; still an atp.Error.
    assert not isinstance(e, oa.ComputeError)
    assert isinstance(e, atp.CommandTimeout)


def test_cancel_is_a_keyboard_interrupt(backend, wd):
    with backend.session(wd, timeout_s=60) as s:
        h = s.exec("echo go; sleep 30")
        next(iter(h.stream()))
        threading.Thread(target=h.cancel).start()
        with pytest.raises(KeyboardInterrupt) as ei:
            h.wait()
        assert isinstance(ei.value, oa.Cancelled)


def test_sync_and_idempotent_close(backend, wd):
    s = backend.session(wd, timeout_s=60)
    s.sync_in()
    s.sync_out()
    s.close()
    s.close()


@pytest.mark.parametrize("status,name", [
    ("infra_timeout", "ExecTimeout"), ("sandbox_dead", "SandboxDead"),
    ("transfer_error", "TransferError"), ("provision_error", "ProvisionError"),
    ("image_unavailable", "ImageUnavailable"),
    ("missing_credentials", "MissingCredentials"),
    ("infra_error", "ComputeError"), ("timeout", "CommandTimeout"),
    ("cancelled", "Cancelled")])
def test_exception_table(status, name):
    """Each atp status class becomes open-atp's exception of that name,
    which is also atp's exception of the class."""
    cls = getattr(oa, name)
    native = atp.errors.EXCEPTIONS[status]
    # infra_error is atp.InfraError; open-atp's name for it is the parent.
    assert issubclass(cls, atp.ComputeError if status == "infra_error"
                      else native)
    r = atp.Result(status=atp.Status(status), exit_code=1, stdout="o\n")
    e = oa._translate(native("the core's message", result=r,
                             code="ATP_E_X"))
    assert type(e) is cls and str(e) == "the core's message"
    assert isinstance(e.result, oa.CommandResult) and e.result.stdout == "o"
    if name not in ("CommandTimeout", "Cancelled"):
        assert isinstance(e, oa.ComputeError) and isinstance(e, RuntimeError)
    assert issubclass(oa.ImageUnavailable, oa.ProvisionError)


def test_a_failed_provision_raises_open_atps_exception(wd, tmp_path):
    # A docker backend whose daemon does not exist fails to provision.
    ini = tmp_path / "atp.ini"
    ini.write_text(f"[atp]\nbackend = docker\n[backend.docker]\n"
                   f"socket = unix://{tmp_path}/no.sock\nimage = x:1\n")
    b = oa.AtpBackend(config=str(ini))
    with pytest.raises(oa.ComputeError) as ei:
        b.session(wd, timeout_s=10)
    assert "no.sock" in str(ei.value)
    assert isinstance(ei.value, atp.Error)
    b.close()


OPEN_ATP_STUB = '''
import abc
from dataclasses import dataclass

class ComputeError(RuntimeError): pass
class ExecTimeout(ComputeError): pass
class SandboxDead(ComputeError): pass
class TransferError(ComputeError): pass
class ProvisionError(ComputeError): pass
class ImageUnavailable(ProvisionError): pass
class CommandTimeout(Exception):
    def __init__(self, msg, result=None):
        super().__init__(msg)
        self.result = result

@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float

class CommandHandle(abc.ABC): pass
class ComputeSession(abc.ABC): pass
class ComputeBackend(abc.ABC): pass
'''


def test_with_open_atp_importable_its_types_are_used(tmp_path, wd):
    """open-atp's base module as its contract describes it (a stand-in
    written from the contract: open-atp itself is not packaged here)."""
    pkg = tmp_path / "site" / "open_atp" / "backends"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text(OPEN_ATP_STUB)
    code = textwrap.dedent(f'''
        import sys
        from open_atp.backends import base
        from atp.compat import open_atp as oa
        import atp
        assert oa.HAVE_OPEN_ATP
        b = oa.AtpBackend(backend="local")
        assert isinstance(b, base.ComputeBackend)
        with b.session("{wd}", timeout_s=30) as s:
            assert isinstance(s, base.ComputeSession)
            h = s.exec("echo hi")
            assert isinstance(h, base.CommandHandle)
            r = h.wait()
            assert type(r) is base.CommandResult and r.stdout == "hi"
            try:
                s.exec("echo p; sleep 30", timeout_s=1).wait()
            except base.CommandTimeout as e:
                assert isinstance(e, atp.CommandTimeout)
                assert type(e.result) is base.CommandResult
                assert e.result.stdout == "p"
            else:
                raise AssertionError("no CommandTimeout")
        assert issubclass(oa.ExecTimeout, base.ExecTimeout)
        assert issubclass(oa.ImageUnavailable, base.ProvisionError)
        b.close()
        print("conformant")
    ''')
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "site")] + sys.path)
    p = subprocess.run([sys.executable, "-c", code], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "conformant"
