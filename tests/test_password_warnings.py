"""A password given on the command line (visible in ``ps``) gets one warning line naming where it belongs."""

from __future__ import annotations

import argparse
import os

import pytest

from atlaspipe.cli import flower
from atlaspipe.cli.common import warn_password_in_argv


def test_broker_and_backend_urls_with_a_password_warn(capsys: pytest.CaptureFixture[str]) -> None:
    warn_password_in_argv("--broker", "amqp://guest@127.0.0.1:5672//")
    warn_password_in_argv("--backend", "redis://127.0.0.1:6379/8")
    assert capsys.readouterr().err == ""
    warn_password_in_argv("--broker", "amqp://alice:hunter2@rabbit:5672//")
    warn_password_in_argv("--backend", "redis://:hunter2@redis:6379/0")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "hunter2" not in "".join(lines)
    assert "ATLASPIPE_BROKER_URL or ATLASPIPE_BROKER_URL_FILE" in lines[0]
    assert "ATLASPIPE_RESULT_BACKEND or ATLASPIPE_RESULT_BACKEND_FILE" in lines[1]


def test_bench_warns_before_it_connects(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from atlaspipe.cli import bench

    def stop(_options: object) -> None:
        raise SystemExit(3)

    monkeypatch.setattr(bench, "run_bench", stop)
    args = argparse.Namespace(env="local", output=None, input=[], events=None, dataset_dir=None, chunk_size=None,
                              interval=1.0, broker="amqp://u:hunter2@h//", backend=None, run_output=None,
                              prometheus_url=None, exporter=[], cgroup=[], split_workers=False)
    with pytest.raises(SystemExit):
        bench.main(args)
    assert "--broker carries a password" in capsys.readouterr().err


def test_flower_basic_auth_on_the_command_line_warns(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_exec(*_args: object) -> None:
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", no_exec)
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.delenv("FLOWER_BASIC_AUTH_FILE", raising=False)
    with pytest.raises(SystemExit):
        flower.run(["--address", "127.0.0.1", "--port", "5555"])
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        flower.run(["--address", "0.0.0.0", "--basic-auth", "alice:hunter2"])
    err = capsys.readouterr().err
    assert "--basic-auth carries a password" in err and "FLOWER_BASIC_AUTH_FILE" in err and "hunter2" not in err
