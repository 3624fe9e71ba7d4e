"""The server's request time limits: one timer for every request in flight."""

from __future__ import annotations

import asyncio

import pytest

from amber.serving._deadline import Deadlines


async def _request(deadlines: Deadlines, seconds: float) -> str:
    """A request's shape in the handler: work that waits ``seconds``, under its time limit."""
    try:
        with deadlines:
            await asyncio.sleep(seconds)
    except TimeoutError:
        return "timed out"
    return "done"


def test_only_the_requests_past_their_limit_time_out() -> None:
    async def main() -> list[str]:
        deadlines = Deadlines(0.3)
        first = asyncio.create_task(_request(deadlines, 2.0))  # due at 0.3 s: times out
        await asyncio.sleep(0.1)
        quick = [asyncio.create_task(_request(deadlines, 0.01)) for _ in range(20)]
        late = asyncio.create_task(_request(deadlines, 0.1))  # due at 0.4 s, done at 0.2 s
        slow = asyncio.create_task(_request(deadlines, 2.0))  # due at 0.4 s: times out
        out = await asyncio.gather(first, *quick, late, slow)
        assert not deadlines._due and not deadlines._expired
        deadlines.close()
        return out

    loop = asyncio.new_event_loop()
    started = loop.time()
    out = loop.run_until_complete(main())
    took = loop.time() - started
    loop.close()
    assert out == ["timed out", *["done"] * 20, "done", "timed out"]
    assert 0.4 <= took < 1.5  # the slow ones were cut at their limit, not left to sleep 2 s


def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    async def main() -> None:
        deadlines = Deadlines(5.0)
        task = asyncio.create_task(_request(deadlines, 1.0))
        await asyncio.sleep(0.05)
        task.cancel()  # shutdown, or the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._due
        deadlines.close()

    asyncio.run(main())


def test_a_request_outside_a_task_is_refused() -> None:
    deadlines = Deadlines(1.0)
    with pytest.raises(RuntimeError, match="running task"):
        deadlines.__enter__()


@pytest.mark.parametrize("seconds", [0, -1.0, float("inf"), float("nan"), 86400])
def test_a_time_limit_that_cannot_work_is_refused(seconds: float) -> None:
    from amber.serving._config import ServeConfig

    with pytest.raises(ValueError, match=r"more than 0 and less than a day.*--request-timeout"):
        ServeConfig(models=(), request_timeout_s=seconds)


def test_the_cli_says_what_is_wrong_with_the_time_limit(tmp_path) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "amber",
            "serve",
            str(tmp_path / "m.amber"),
            "--request-timeout",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "request timeout must be more than 0" in r.stderr
