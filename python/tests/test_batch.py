"""atp.batch() over atp_batch_*(), against the local backend."""

import json
import threading

import pytest

import atp


def test_a_batch_of_attempts_over_templates(tmp_path):
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "input").write_text("seed\n")
    attempts = [{"id": f"a{i}", "template": str(tpl),
                 "command": f"cat input; echo {i} > input; exit {i % 3}",
                 "env": {"N": str(i)}} for i in range(12)]
    seen = []
    results = atp.batch(attempts, backend="local", jobs=4,
                        on_result=seen.append)
    assert sorted(r.id for r in results) == sorted(f"a{i}" for i in range(12))
    assert seen == results
    for r in results:
        i = int(r.id[1:])
        assert r.stdout == "seed\n"       # each ran over its own copy
        assert r.result.exit_code == i % 3
        assert r.status == ("ok" if i % 3 == 0 else "exit")
        assert r.backend == "local" and r.attempts == 1 and r.run_id
    assert (tpl / "input").read_text() == "seed\n"


def test_a_jsonl_file_and_argv_commands(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    f = tmp_path / "attempts.jsonl"
    f.write_text("\n".join([
        json.dumps({"id": "one", "command": ["printf", "%s|\n", "a b"],
                    "workdir": str(wd)}),
        "# a comment",
        "",
        json.dumps({"id": "two", "command": "sleep 30", "timeout_s": "1s",
                    "workdir": str(wd)})]) + "\n")
    rs = {r.id: r for r in atp.batch(f, backend="local", jobs=2)}
    assert rs["one"].stdout == "a b|\n"
    assert rs["two"].status == "timeout"


def test_bad_attempts_raise_with_the_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "x", "comand": "true"}\n')
    with pytest.raises(atp.ConfigError, match=r"bad.jsonl:1: unknown key "
                       r"'comand'"):
        atp.batch(f, backend="local")
    with pytest.raises(atp.ConfigError, match="used twice"):
        atp.batch([{"id": "a", "command": "true"},
                   {"id": "a", "command": "true"}], backend="local")


def test_cancel_from_another_thread(tmp_path):
    b = atp.Batch(backend="local", jobs=2)
    attempts = [{"id": str(i), "command": "sleep 60",
                 "workdir": str(tmp_path)} for i in range(4)]
    progress = []
    b._sink.on_progress = lambda p: (progress.append(p),
                                     p.running >= 2 and b.cancel())
    with pytest.raises(atp.Cancelled) as ei:
        b.run(attempts)
    b.close()
    assert all(r.status == "cancelled" for r in ei.value.results)
