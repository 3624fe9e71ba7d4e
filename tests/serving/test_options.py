"""``amber serve`` refuses options that cannot work at startup, before loading any model or
binding a port, with status 2 and the option's name: not a server that wraps the port number
around, answers every request 413 or 503, or waits a negative time."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import amber
from amber.cli import main
from amber.serving import ModelSpec, ServeConfig, create_app

IRIS_X, IRIS_Y = load_iris(return_X_y=True)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-batch-size", "missing=-3"], "--max-batch-size"),
        (["--max-batch-size", "iris=8"], "no model of that name is served"),
        (["--batching", "zz=on"], "--batching"),
        (["--max-latency-ms", "-1"], "--max-latency-ms"),
        (["--max-latency-ms", "nan"], "--max-latency-ms"),
        (["--poll-interval", "-1"], "--poll-interval"),
        (["--poll-interval", "inf"], "--poll-interval"),
        (["--max-body-mb", "0"], "--max-body-mb"),
        (["--port", "99999"], "--port"),
        (["--port", "-1"], "--port"),
        (["--graceful-timeout", "-5"], "--graceful-timeout"),
    ],
)
def test_an_option_that_cannot_work_is_refused_at_startup(
    options: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # (the model file does not exist: the options are refused before any load is tried)
    assert main(["serve", "missing.amber", *options]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err
    assert "missing.amber" not in err, err


def test_the_library_refuses_the_same_values() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ModelSpec("a.amber", max_batch_size=0)
    with pytest.raises(ValueError, match="at least 1"):
        ModelSpec("a.amber", max_batch_size=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        ModelSpec("a.amber", batching="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 or more"):
        ModelSpec("a.amber", max_latency_ms=-0.5)
    with pytest.raises(ValueError, match="at least 1 byte"):
        ServeConfig(models=(), max_body_bytes=0)
    with pytest.raises(ValueError, match="poll interval"):
        ServeConfig(models=(), poll_interval_s=float("nan"))
    assert ServeConfig(models=(), poll_interval_s=0).poll_interval_s == 0  # 0: never polls
    assert ModelSpec("a.amber", max_latency_ms=0).max_latency_ms == 0


def test_a_file_that_is_no_intact_artifact_is_refused_at_startup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a server that starts and then logs failed loads until the file is replaced."""
    import pickle

    good = tmp_path / "good.amber"
    amber.save(LogisticRegression(max_iter=300).fit(IRIS_X, IRIS_Y), good)
    cases = {
        "empty.amber": b"",
        "notes.txt": b"a text file\n",
        "model.pkl": pickle.dumps({"a": 1}, protocol=5),
        "truncated.amber": good.read_bytes()[: good.stat().st_size // 2],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        # (the library first: were the file let through, `amber serve` would start and serve)
        with pytest.raises(amber.FormatError, match="cannot serve"):
            create_app([str(path)])
        assert main(["serve", str(path), "--port", "0"]) == 1, name
        err = capsys.readouterr().err
        assert f"cannot serve {str(path)!r}" in err and "Traceback" not in err, err
    with pytest.raises(amber.FormatError, match="amber convert"):
        create_app([str(tmp_path / "model.pkl")])
    assert create_app([str(good)]) is not None  # the intact file opens


def test_an_address_the_server_cannot_listen_on_is_said_at_startup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "missing.amber", "--port", port]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err, err
    assert main(["serve", "missing.amber", "--host", "999.1.1.1", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on host '999.1.1.1'" in err and "--host" in err, err
