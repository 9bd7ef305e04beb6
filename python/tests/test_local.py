"""The package against the local backend: what a user of sessions,
commands, streaming, timeouts and cancellation would notice."""

import dataclasses
import gc
import os
import threading
import time
import warnings

import pytest

import atp
from atp._ffi import ffi, lib
from conftest import pid_alive, wait_until


def test_stream_delivers_each_line_while_the_command_still_runs(local, wd):
    with local.session(wd) as s:
        # Each line waits for a file that the consumer creates after it
        # has seen the line before: only live delivery can finish this.
        c = s.exec("for i in 1 2 3 4; do echo line$i; "
                   "while [ ! -e seen$i ]; do sleep 0.02; done; done; "
                   "echo end", timeout=60)
        seen = []
        for line in c.stream():
            seen.append(line)
            if line.startswith("line"):
                assert not c.done(), "the command ended before its line " \
                    "was seen"
                (wd / ("seen" + line[4:])).touch()
        r = c.wait()
    assert seen == ["line1", "line2", "line3", "line4", "end"]
    assert r.status == atp.Status.OK and r.exit_code == 0


def test_a_line_a_second_arrives_a_second_apart(local, wd):
    with local.session(wd) as s:
        c = s.exec("for i in 1 2 3; do echo $i; sleep 1; done", timeout=60)
        t0 = time.monotonic()
        times = [(line, time.monotonic() - t0) for line in c.stream()]
        c.wait()
    assert [x for x, _ in times] == ["1", "2", "3"]
    # The first line does not wait for the command's end (3 s).
    assert times[0][1] < 1.5
    assert times[2][1] - times[0][1] > 1.5


def test_stderr_is_kept_apart_and_tagged_on_request(local, wd):
    with local.session(wd) as s:
        c = s.exec("echo out1; echo err1 >&2; echo out2; printf tail")
        both = list(c.stream(stderr=True))
        r = c.wait()
    assert list(c.stream()) == ["out1", "out2", "tail"]
    assert ("stderr", "err1") in both
    assert [x for x in both if x[0] == "stdout"] == [
        ("stdout", "out1"), ("stdout", "out2"), ("stdout", "tail")]
    assert r.stdout == "out1\nout2\ntail"      # no newline after "tail"
    assert r.stderr == "err1\n"
    assert r.stdout_bytes == len(b"out1\nout2\ntail")


def test_timeout_raises_with_the_partial_output(local, wd):
    with local.session(wd) as s:
        t0 = time.monotonic()
        with pytest.raises(atp.CommandTimeout) as ei:
            s.exec("echo before; echo warn >&2; sleep 30; echo after",
                   timeout=1).wait()
        assert time.monotonic() - t0 < 20
        e = ei.value
        assert isinstance(e, atp.Error)
        assert e.result.status == "timeout"
        assert e.result.stdout == "before\n"
        assert e.result.stderr == "warn\n"
        assert "budget" in str(e)                 # the core's message
        # The session is still usable after a timeout.
        assert s.exec("echo again").wait().stdout == "again\n"


def test_exit_124_by_itself_is_not_a_timeout(local, wd):
    with local.session(wd) as s:
        r = s.exec("exit 124", timeout=30).wait()
    assert r.status == atp.Status.EXIT and r.exit_code == 124


def test_cancel_from_another_thread(local, wd):
    with local.session(wd) as s:
        c = s.exec("echo started; sleep 60", timeout=120)
        it = c.stream()
        assert next(it) == "started"
        t0 = time.monotonic()
        threading.Thread(target=c.cancel).start()
        with pytest.raises(atp.Cancelled) as ei:
            c.wait()
        assert time.monotonic() - t0 < 15
        assert ei.value.result.stdout == "started\n"
        # A cancelled session says so for what comes next.
        with pytest.raises(atp.Cancelled, match="cancelled"):
            s.exec("true").wait()


def test_an_exception_in_a_line_callback_cancels_and_is_raised(local, wd):
    class Stop(Exception):
        pass

    def on_stdout(line):
        if line == "two":
            raise Stop(line)

    with local.session(wd) as s:
        t0 = time.monotonic()
        c = s.exec("echo one; echo two; sleep 60; echo three",
                   on_stdout=on_stdout, timeout=120)
        with pytest.raises(Stop):
            c.wait()
        assert time.monotonic() - t0 < 15
        assert c.result.stdout == "one\ntwo\n"


def test_callbacks_get_every_line_in_order(local, wd):
    out, err = [], []
    with local.session(wd) as s:
        r = s.exec("i=0; while [ $i -lt 500 ]; do echo o$i; echo e$i >&2; "
                   "i=$((i+1)); done", on_stdout=out.append,
                   on_stderr=err.append).wait()
    assert out == [f"o{i}" for i in range(500)]
    assert err == [f"e{i}" for i in range(500)]
    assert r.stdout.count("\n") == 500


def test_a_slow_consumer_does_not_hold_the_command_up(local, wd):
    with local.session(wd) as s:
        c = s.exec("seq 1 20000", timeout=60)
        # Nobody reads: the command still runs to its end.
        assert wait_until(c.done, 30), "the command did not end unread"
        assert sum(1 for _ in c.stream()) == 20000
        assert c.wait().stdout_truncated is False


def test_argv_commands_are_quoted(local, wd):
    with local.session(wd) as s:
        r = s.exec(["printf", "%s|", "a b", "it's", "$HOME", ";", "*"]).wait()
    assert r.stdout == "a b|it's|$HOME|;|*|"
    assert atp.shell_join(["echo", "a b"]) == "exec echo 'a b'"


def test_stdin_bytes_str_and_files(local, wd, tmp_path):
    with local.session(wd) as s:
        assert s.exec("cat", stdin=b"x\ny\n").wait().stdout == "x\ny\n"
        assert s.exec("wc -c", stdin="é" * 100000).wait().stdout.strip() \
            == "200000"
        f = tmp_path / "in"
        f.write_text("from a file\n")
        with open(f) as fh:
            assert s.exec("cat", stdin=fh).wait().stdout == "from a file\n"
        # Without stdin the command reads an empty one.
        assert s.exec("cat").wait().stdout == ""


def test_environment_of_the_session_and_of_one_command(local, wd):
    with local.session(wd, env={"A": "session", "B": "b"}) as s:
        r = s.exec('echo "$A $B $C"', env={"A": "exec", "C": "c"}).wait()
        assert r.stdout == "exec b c\n"
        assert s.exec('echo "$A"').wait().stdout == "session\n"
        with pytest.raises(atp.ConfigError):
            s.exec("true", env={"A=B": "x"})


def test_check_raises_on_a_non_zero_exit(local, wd):
    with local.session(wd) as s:
        assert s.exec("exit 3").wait().exit_code == 3
        with pytest.raises(atp.CommandFailed) as ei:
            s.exec("echo no >&2; exit 3", check=True).wait()
    assert ei.value.result.exit_code == 3 and ei.value.result.stderr == "no\n"


def test_signals_are_reported(local, wd):
    with local.session(wd) as s:
        r = s.exec(["sh", "-c", "kill -TERM $$"]).wait()
    assert r.status == "exit" and r.signal == 15 and r.returncode == -15


def test_wait_with_a_timeout_leaves_the_command_running(local, wd):
    with local.session(wd) as s:
        c = s.exec("while [ ! -e go ]; do sleep 0.02; done; echo done")
        with pytest.raises(TimeoutError):
            c.wait(timeout=0.2)
        assert not c.done()
        (wd / "go").touch()
        assert c.wait(timeout=30).stdout == "done\n"


def test_commands_of_one_session_run_in_the_order_they_were_started(local, wd):
    with local.session(wd) as s:
        cs = [s.exec(f"echo {i} >> log") for i in range(20)]
        s.sync_in()                      # waits for its turn as well
        assert (wd / "log").read_text() == "".join(f"{i}\n"
                                                   for i in range(20))
        assert all(c.wait().ok for c in cs)


def test_one_shot_run_and_its_workdir(local, wd):
    r = local.run("echo hi; echo content > made", wd, timeout=30)
    assert r.ok and r.stdout == "hi\n"
    assert (wd / "made").read_text() == "content\n"
    with pytest.raises(atp.CommandTimeout) as ei:
        local.run("echo x; sleep 30", wd, timeout=0.5)
    assert ei.value.result.stdout == "x\n"


def test_events_by_callback_and_list(local, wd):
    got = []
    with local.session(wd, on_event=got.append) as s:
        s.exec("true").wait()
    types = [e.type for e in got]
    assert types[:2] == ["starting", "provisioned"] and types[-1] == "closed"
    assert "exec" in types
    assert s.events == got
    assert got[0].fields["run_id"] == s.run_id


def test_close_is_idempotent_and_a_closed_session_says_so(local, wd):
    s = local.session(wd)
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(atp.ConfigError, match="closed"):
        s.exec("true").wait()


def test_leaving_a_with_block_on_an_exception_kills_the_command(local, wd):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with local.session(wd) as s:
            c = s.exec("echo $$; exec sleep 60", timeout=120)
            pid = int(next(iter(c.stream())))
            assert pid_alive(pid)
            raise Boom()
    assert c.done()
    assert wait_until(lambda: not pid_alive(pid), 10), \
        f"the command (pid {pid}) outlived its session"


def test_garbage_collection_closes_with_a_warning(local, wd):
    events = []
    s = local.session(wd, on_event=lambda e: events.append(e.type))
    s.exec("true").wait()
    with pytest.warns(ResourceWarning, match="not closed"):
        del s
        gc.collect()
    assert events[-1] == "closed"


def test_closing_the_backend_closes_its_sessions(wd):
    be = atp.open(backend="local")
    events = []
    s = be.session(wd, on_event=lambda e: events.append(e.type))
    c = s.exec("sleep 60", timeout=120)
    t0 = time.monotonic()
    be.close()
    assert time.monotonic() - t0 < 15
    assert s.closed and events[-1] == "closed"
    with pytest.raises(atp.Cancelled):
        c.wait()
    be.close()


def test_32_concurrent_sessions_from_threads(local, tmp_path):
    n = 32
    results = [None] * n
    errors = []

    def work(i):
        try:
            d = tmp_path / f"wd{i}"
            d.mkdir()
            with local.session(d, env={"N": str(i)}) as s:
                lines = list(s.exec('echo "$N"; pwd; sleep 0.2; echo "$N"')
                             .stream())
                r = s.exec("cat f 2>/dev/null; echo $N > f").wait()
                results[i] = (lines, r.ok)
        except BaseException as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    for i in range(n):
        lines, ok = results[i]
        assert lines == [str(i), str(tmp_path / f"wd{i}"), str(i)] and ok
        assert (tmp_path / f"wd{i}" / "f").read_text() == f"{i}\n"


def _fds():
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_or_thread_leaks_after_1000_execs(local, wd):
    with local.session(wd) as s:
        for _ in range(20):                       # warm up
            s.exec("true").wait()
        fds, threads = _fds(), threading.active_count()
        for i in range(1000):
            r = s.exec(f"echo {i}", stdin=b"x" if i % 10 == 0 else None
                       ).wait()
            assert r.stdout == f"{i}\n"
        gc.collect()
        assert _fds() == fds, "descriptors leaked"
        assert wait_until(lambda: threading.active_count() == threads, 10)


def test_zeroed_and_default_options(local, wd, monkeypatch):
    monkeypatch.chdir(wd)
    # Every default: the current directory, [atp] timeout_s.
    with local.session() as s:
        assert s.exec("pwd").wait().stdout == f"{wd}\n"
    # The C structs zeroed but for struct_size, as the header allows.
    sopts = ffi.new("atp_session_opts *")
    sopts.struct_size = ffi.sizeof("atp_session_opts")
    eopts = ffi.new("atp_exec_opts *")
    eopts.struct_size = ffi.sizeof("atp_exec_opts")
    res = ffi.new("atp_result *")
    lib.atp_result_init(res, ffi.sizeof("atp_result"))
    rc = lib.atp_run(local._ptr(), sopts, b"echo hi > zeroed", eopts, 1, res)
    assert rc == 0 and res.status == lib.ATP_STATUS_OK
    assert (wd / "zeroed").read_text() == "hi\n"


def test_result_has_every_field_of_the_c_result(local, wd):
    names = {f.name for f in dataclasses.fields(atp.Result)}
    c_names = {n for n, _ in ffi.typeof("atp_result").fields}
    assert c_names - {"struct_size"} <= names
    with local.session(wd) as s:
        r = s.exec("head -c 100000 /dev/zero > /dev/null; echo x").wait()
    assert r.exec_s > 0 and r.duration_s > 0
    assert r.cpu_s >= 0 and r.max_rss_bytes > 0
    assert r.cost_usd == -1.0 and r.message == ""


def test_long_lines_arrive_whole(wd, tmp_path):
    ini = tmp_path / "atp.ini"
    ini.write_text("[atp]\nbackend = local\nmax_line = 4096\n")
    with atp.open(config=ini) as be, be.session(wd) as s:
        r = s.exec("head -c 10000 /dev/zero | tr '\\0' a; echo; echo short"
                   ).wait()
    assert list(s.events) and r.stdout.split("\n")[:2] == ["a" * 10000,
                                                           "short"]


def test_unknown_backend_and_bad_configuration_say_what_to_do(tmp_path):
    with pytest.raises(atp.ConfigError) as ei:
        atp.open(backend="no-such-backend")
    assert "no-such-backend" in str(ei.value)
    assert ei.value.code is not None and ei.value.code.startswith("ATP_E_")
    with pytest.raises(atp.ConfigError) as ei:
        atp.open(config_text="[atp]\ntimout_s = 5\n")
    assert "timeout_s" in str(ei.value)          # the nearest valid key
    with pytest.raises(atp.ConfigError, match="no-such.ini"):
        atp.open(config=tmp_path / "no-such.ini")


def test_backend_properties_and_check(local):
    assert local.name == "local" and local.plugin == "local"
    assert {"sessions", "streaming", "stdin"} <= local.capabilities
    assert local.plugin_path.endswith("atp-local.so")
    assert local.check().status == "ok"
    assert atp.libatp_version.startswith("0.")


def test_logs_reach_the_callback(wd, monkeypatch):
    monkeypatch.setenv("ATP_PLUGIN_DEBUG", "1")
    got = []
    with atp.open(backend="local", log=lambda lvl, origin, msg:
                  got.append((lvl, origin, msg)), log_level="debug") as be:
        be.run("true", wd)
    assert any(origin == "plugin-loader" and "atp-local.so" in msg
               for _, origin, msg in got), got


def test_status_classes_map_to_exceptions():
    assert set(atp.errors.EXCEPTIONS) == {s.value for s in atp.Status} - {"ok"}
    for name, cls in atp.errors.EXCEPTIONS.items():
        assert issubclass(cls, atp.Error) and cls.status == name
    assert issubclass(atp.ImageUnavailable, atp.ProvisionError)
    assert atp.Status.TIMEOUT.exit_status == 124


def test_asyncio(local, wd):
    import asyncio

    async def main():
        with local.session(wd) as s:
            c = s.exec("echo 1; sleep 0.2; echo 2")
            lines = [line async for line in c.astream()]
            r = await c.wait_async()
            other = await asyncio.gather(
                *(s.exec(f"echo {i}").wait_async() for i in range(3)))
        return lines, r, other

    lines, r, other = asyncio.run(main())
    assert lines == ["1", "2"] and r.ok
    assert [x.stdout for x in other] == ["0\n", "1\n", "2\n"]


# 160,000 lines of 100 bytes: 16 MB through the stream.
_BIG = "awk 'BEGIN { for (i = 0; i < 160000; i++) printf \"%099d\\n\", i }'"
_BIG_LINES, _BIG_BYTES = 160000, 160000 * 100


def _peak_while(fn):
    """What fn() returns, and the most memory Python held meanwhile above
    where it started (bytes, tracemalloc)."""
    import tracemalloc
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_keep_output_false_streams_megabytes_in_bounded_memory(local, wd):
    with local.session(wd) as s:
        def read_all(keep):
            c = s.exec(_BIG, timeout=600, keep_output=keep)
            n = size = 0
            for line in c.stream():
                n += 1
                size += len(line) + 1
            return n, size, c.wait()

        (n, size, r), peak = _peak_while(lambda: read_all(False))
        assert (n, size) == (_BIG_LINES, _BIG_BYTES) and r.ok
        assert r.stdout == "" and r.stderr == ""
        assert peak < 8 << 20, f"{peak} bytes held while 16 MB streamed"
        # Kept, the same output is all in memory: the measure sees it.
        (n, size, r), kept = _peak_while(lambda: read_all(True))
        assert n == _BIG_LINES and len(r.stdout) == _BIG_BYTES
        assert kept > _BIG_BYTES > 2 * peak


def test_keep_output_false_without_a_reader(local, wd):
    with local.session(wd) as s:
        # wait() alone: nothing is kept and the command is not held up.
        r, peak = _peak_while(
            lambda: s.exec(_BIG, timeout=600, keep_output=False).wait())
        assert r.ok and r.stdout == ""
        assert peak < 8 << 20, f"{peak} bytes held while 16 MB went by"
        # A callback sees every line; a loop left early drops the rest
        # and the command still ends.
        seen = []
        c = s.exec(_BIG, timeout=600, keep_output=False,
                   on_stdout=lambda line: seen.append(len(line)))
        for i, _ in enumerate(c.stream()):
            if i == 10:
                break
        assert c.wait().ok and len(seen) == _BIG_LINES
