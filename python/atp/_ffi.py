"""Loading libatp: the cffi declarations and the shared library.

The declarations (``_cdef.h``) are read in cffi's ABI mode, so the package
has no compiled part of its own; ``tests/test_cdef.py`` compiles the same
text against ``include/atp/atp.h`` so that the two cannot drift apart.

Where libatp is looked for, first match wins:

1. ``$ATP_LIBRARY``: the path of ``libatp.so`` (for an uninstalled build,
   ``BUILDDIR/core/.libs/libatp.so``);
2. the directory ``make install`` recorded in ``atp/_paths.py``;
3. ``pkg-config --variable=libdir atp``;
4. ``ctypes.util.find_library("atp")``;
5. ``libatp.so.0`` through the dynamic loader's own search
   (``LD_LIBRARY_PATH``, ``ld.so.cache``).
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
from pathlib import Path
import importlib
from typing import Any, Callable, List, Optional, Tuple

from cffi import FFI

SONAME = "libatp.so.0"
#: The oldest libatp whose client API this package speaks.
MIN_VERSION = (0, 2)


class LibraryNotFound(ImportError):
    """libatp could not be found or loaded; the message lists where."""


def _cdef_text() -> str:
    return (Path(__file__).with_name("_cdef.h")).read_text()


ffi = FFI()
ffi.cdef(_cdef_text())


def callback(decl: str) -> Callable[[Callable[..., Any]], Any]:
    """ffi.callback(@decl) as a decorator: the function, checked as
    written, becomes the C function pointer that calls it."""
    deco: Callable[[Callable[..., Any]], Any] = ffi.callback(decl)
    return deco


def _installed_libdir() -> Optional[str]:
    try:
        # written by `make install`
        paths = importlib.import_module(__package__ + "._paths")
    except ImportError:
        return None
    libdir: Optional[str] = getattr(paths, "LIBDIR", None)
    return libdir


def _pkg_config_libdir() -> Optional[str]:
    exe = shutil.which("pkg-config")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--variable=libdir", "atp"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    d = out.stdout.strip()
    return d if out.returncode == 0 and d else None


def _candidates() -> List[Tuple[str, str]]:
    """(where the name came from, name to dlopen), in search order."""
    env = os.environ.get("ATP_LIBRARY")
    if env:
        # An explicit choice is the only one: a wrong path must not fall
        # back silently to some other libatp.
        return [("$ATP_LIBRARY", env)]
    out: List[Tuple[str, str]] = []
    d = _installed_libdir()
    if d:
        out.append(("the installed package's libdir", os.path.join(d, SONAME)))
    d = _pkg_config_libdir()
    if d:
        out.append(("pkg-config atp", os.path.join(d, SONAME)))
    name = ctypes.util.find_library("atp")
    if name:
        out.append(("ctypes.util.find_library", name))
    out.append(("the dynamic loader", SONAME))
    return out


def _version_tuple(text: str) -> Tuple[int, ...]:
    parts = []
    for p in text.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def load() -> Tuple[Any, str]:
    """dlopen libatp; returns (lib, the name that was loaded)."""
    tried = []
    for origin, name in _candidates():
        try:
            lib = ffi.dlopen(name)
        except OSError as e:
            tried.append(f"{name} ({origin}): {e}")
            continue
        version = ffi.string(lib.atp_version()).decode()
        if _version_tuple(version)[:2] < MIN_VERSION:
            raise LibraryNotFound(
                f"{name} is libatp {version}; this package needs "
                f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer: install a newer "
                "atp or point ATP_LIBRARY at one")
        return lib, name
    raise LibraryNotFound(
        "libatp was not found; tried " + "; ".join(tried) +
        ". Install atp (make install), or set ATP_LIBRARY to the path of "
        "libatp.so (BUILDDIR/core/.libs/libatp.so for a build tree)")


lib, library_path = load()


def text(p: Any) -> str:
    """A C string as str ("" for NULL); bytes that are not UTF-8 are kept
    as replacement characters."""
    if p == ffi.NULL:
        return ""
    s: str = ffi.string(p).decode("utf-8", "replace")
    return s


def opt_text(p: Any) -> Optional[str]:
    return None if p == ffi.NULL else ffi.string(p).decode("utf-8", "replace")
