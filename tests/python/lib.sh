# tests/python/lib.sh - run the Python package's pytest files as TAP.
#
#   . "${ATP_TOP_SRCDIR:?}/tests/python/lib.sh"     # after tests/lib.sh
#   py_run test_local.py [test_other.py...]
#
# The package is imported from the source tree (python/) and loads the
# libatp of the build tree ($ATP_LIBRARY).  Each test becomes one TAP line
# on descriptor 3 (python/tests/conftest.py), the plan first; pytest's own
# report goes to a file, shown as diagnostics when a test failed.  A missing Python module is
# a failure that says what to install, never a skip: these tests are part
# of make check.

PY=${ATP_PYTHON:-/usr/bin/python3}

if ! "$PY" -c 'import cffi, pytest, pycparser' 2>"$T/py-deps.err"; then
    echo "Bail out! $PY cannot import cffi, pytest and pycparser" \
        "($(tail -n 1 "$T/py-deps.err")): apt-get install python3-cffi" \
        "python3-pytest python3-pycparser, or set ATP_PYTHON to a python3" \
        "that has them"
    exit 99
fi

# Under build-aux/sanitize, python3 (not instrumented) loads an
# instrumented libatp: ASan's runtime is preloaded, and the interpreter's
# own allocations that it never frees at exit are not reported as leaks.
py_env=
if [ -n "${ATP_ASAN_PRELOAD:-}" ]; then
    py_env="LD_PRELOAD=$ATP_ASAN_PRELOAD ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0"
fi

py_run() {
    py_files=
    for f in "$@"; do
        py_files="$py_files $ATP_TOP_SRCDIR/python/tests/$f"
    done
    ATP_LIBRARY=$ATP_TOP_BUILDDIR/core/.libs/libatp.so \
    ATP_TAP=1 ATP_TAP_FD=3 \
    PYTHONPATH=$ATP_TOP_SRCDIR/python${PYTHONPATH:+:$PYTHONPATH} \
    PYTHONDONTWRITEBYTECODE=1 \
        env $py_env "$PY" -m pytest -p no:cacheprovider -rfE \
        --basetemp="$T/pytest" --rootdir="$ATP_TOP_SRCDIR/python" \
        $py_files \
        3>&1 >"$T/pytest.out" 2>&1
    py_rc=$?
    # pytest's own report, as diagnostics, when something went wrong.
    [ "$py_rc" -eq 0 ] || diag_file "pytest's report" "$T/pytest.out"
    return "$py_rc"
}
