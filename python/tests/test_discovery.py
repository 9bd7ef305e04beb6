"""How the package finds libatp: $ATP_LIBRARY, then an installation's
pkg-config file, with a message that says what to do when neither
works."""

import os
import subprocess
import sys
from pathlib import Path

import atp

LIBDIR = str(Path(atp.library_path).resolve().parent)


def _import(env_changes, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATP_LIBRARY", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH")}
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run(
        [sys.executable, "-c", "import atp; print(atp.library_path); "
         "print(atp.open(backend='local').run('echo ok').stdout, end='')"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_a_wrong_atp_library_is_an_error_that_says_what_to_do(tmp_path):
    p = _import({"ATP_LIBRARY": str(tmp_path / "nope.so")}, tmp_path)
    assert p.returncode != 0
    assert "LibraryNotFound" in p.stderr
    assert "nope.so ($ATP_LIBRARY)" in p.stderr
    assert "set ATP_LIBRARY" in p.stderr


def test_found_through_pkg_config(tmp_path):
    pc = tmp_path / "pc"
    pc.mkdir()
    (pc / "atp.pc").write_text(
        f"libdir={LIBDIR}\nincludedir=/usr/include\n\nName: atp\n"
        "Description: atp\nVersion: 0.2.0\nLibs: -L${libdir} -latp\n")
    p = _import({"PKG_CONFIG_PATH": str(pc)}, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [os.path.join(LIBDIR, "libatp.so.0"),
                                     "ok"]
