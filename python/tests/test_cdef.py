"""The package's cffi declarations (atp/_cdef.h, read in ABI mode) against
the real headers: compiled in cffi's API mode, which checks every struct
layout, enum value and integer constant against what the C compiler
sees, and redeclared after atp.h, where a prototype that differs is a
compile error.  A change to atp.h that the package does not follow fails
here."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atp import _ffi

SRC = Path(os.environ.get("ATP_TOP_SRCDIR",
                          Path(__file__).resolve().parents[2]))
INCLUDE = SRC / "include"
CC = os.environ.get("CC", "cc").split()


@pytest.fixture(scope="module")
def api_ffi(tmp_path_factory):
    from cffi import FFI
    d = tmp_path_factory.mktemp("cdef")
    f = FFI()
    f.cdef(_ffi._cdef_text())
    f.set_source("_atp_cdef_check",
                 "#include <stdlib.h>\n#include <atp/atp.h>\n",
                 include_dirs=[str(INCLUDE)],
                 extra_compile_args=["-Werror", "-Wno-unused-function"],
                 extra_link_args=[_ffi.library_path])
    so = f.compile(tmpdir=str(d))
    spec = importlib.util.spec_from_file_location("_atp_cdef_check", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STRUCTS = ["atp_result", "atp_session_opts", "atp_exec_opts", "atp_event",
           "atp_field", "atp_attempt", "atp_batch_result",
           "atp_batch_progress", "atp_batch_opts", "atp_gc_item",
           "atp_option", "atp_plugin_info"]


@pytest.mark.parametrize("name", STRUCTS)
def test_struct_layout_matches_the_header(api_ffi, name):
    c = api_ffi.ffi       # realizing the type checks it against C
    assert c.sizeof(name) == _ffi.ffi.sizeof(name)
    for field, _ in _ffi.ffi.typeof(name).fields:
        assert c.offsetof(name, field) == _ffi.ffi.offsetof(name, field), \
            f"{name}.{field}"


def test_constants_and_enums_match_the_header(api_ffi):
    names = [n for n in dir(api_ffi.lib) if n.startswith("ATP_")]
    assert "ATP_STATUS_CONFIG_ERROR" in names and "ATP_E_RATE" in names
    for n in names:
        assert getattr(api_ffi.lib, n) == getattr(_ffi.lib, n), n


def test_published_sizes():
    f, lib = _ffi.ffi, _ffi.lib
    assert f.sizeof("atp_result") == lib.ATP_RESULT_SIZE_0_3
    assert f.sizeof("atp_session_opts") == lib.ATP_SESSION_OPTS_SIZE_0_1
    assert f.sizeof("atp_exec_opts") == lib.ATP_EXEC_OPTS_SIZE_0_2
    assert f.sizeof("atp_attempt") == lib.ATP_ATTEMPT_SIZE_0_2
    assert f.sizeof("atp_batch_opts") == lib.ATP_BATCH_OPTS_SIZE_0_2
    assert f.sizeof("atp_plugin_info") == lib.ATP_PLUGIN_INFO_SIZE_0_2
    assert f.sizeof("atp_gc_item") == lib.ATP_GC_ITEM_SIZE_0_1
    assert f.sizeof("atp_event") == lib.ATP_EVENT_SIZE_0_1


def test_prototypes_match_the_header(tmp_path):
    """Each function of the cdef, declared again after atp.h: a prototype
    that differs from the header's is a C error ("conflicting types")."""
    from pycparser import c_ast, c_generator, c_parser
    import re
    text = re.sub(r"/\*.*?\*/", "", _ffi._cdef_text(), flags=re.S)
    body = "\n".join(l for l in text.splitlines()
                     if not l.lstrip().startswith("#"))
    prelude = ("typedef unsigned int uint32_t; typedef int int64_t; "
               "typedef unsigned long uint64_t; typedef unsigned long "
               "size_t;\n")
    ast = c_parser.CParser().parse(prelude + body)
    gen = c_generator.CGenerator()
    decls = [gen.visit(n) + ";" for n in ast.ext
             if isinstance(n, c_ast.Decl) and isinstance(n.type,
                                                         c_ast.FuncDecl)]
    assert len(decls) > 40
    src = tmp_path / "protos.c"
    src.write_text("#include <stdlib.h>\n#include <atp/atp.h>\n"
                   + "\n".join(decls) + "\n")
    p = subprocess.run(CC + ["-std=c11", "-fsyntax-only", "-Werror",
                             "-I", str(INCLUDE), str(src)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_every_function_of_the_header_is_declared():
    """A function added to atp.h shows up here until the package declares
    it (or says why not)."""
    import re
    hdr = (INCLUDE / "atp" / "atp.h").read_text()
    in_header = set(re.findall(r"ATP_EXTERN[^;(]*?\b(atp_\w+)\s*\(", hdr))
    declared = set(re.findall(r"\b(atp_\w+)\s*\(", _ffi._cdef_text()))
    assert in_header and in_header - declared == set()
