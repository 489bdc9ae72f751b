"""An operator runs the benchmarks: whatever happens, they leave no files behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]


async def test_an_interrupted_load_benchmark_stops_the_bot_and_leaves_no_files(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    bench = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.load", "--burst", "20", "--model-latency", "60"),
        cwd=ROOT,
        env={"PATH": "", "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert bench.stderr is not None
    try:
        started = await asyncio.wait_for(bench.stderr.readline(), 60)
        assert started.startswith(b"bench: the bot is up (pid "), started
        bot_pid = int(started.split(b"pid ")[1].rstrip(b")\n"))
        assert list(temp.iterdir()), "the run keeps its files in the temporary directory"
        bench.send_signal(signal.SIGINT)  # Ctrl-C
        _, errors = await asyncio.wait_for(bench.communicate(), 60)
    finally:
        if bench.returncode is None:
            bench.kill()
            await bench.wait()
    assert bench.returncode == 130, errors.decode()
    with pytest.raises(ProcessLookupError):
        os.kill(bot_pid, 0)  # the bot was stopped
    assert list(temp.iterdir()) == [], "nothing is left in the temporary directory"


async def test_the_fault_benchmark_reports_each_outcome_and_leaves_no_files(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    bench = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.faults", "--engine", "responses", "--n", "4"),
        *("--slack-rate", "0", "--backend-rate", "0", "--settle-seconds", "0"),
        cwd=ROOT,
        env={"PATH": "", "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(bench.communicate(), 120)
    assert bench.returncode == 0, errors.decode()
    figures = dict(line.split(": ", 1) for line in output.decode().splitlines() if ": " in line)
    assert (figures["answered"], figures["lost"], figures["duplicated"]) == ("4", "0", "0")
    assert figures["stale"].startswith("0 ")
    assert list(temp.iterdir()) == [], "nothing is left in the temporary directory"


async def test_the_load_benchmark_on_two_replicas_answers_each_mention_once_and_drops_its_database(
    tmp_path: Path, postgres_url: str
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    bench = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.load", "--burst", "6", "--model-latency", "0"),
        *("--database", postgres_url, "--replicas", "2", "--kill-one-halfway"),
        *("--idle-seconds", "0", "--settle-seconds", "0"),
        cwd=ROOT,
        env={"PATH": "", "TMPDIR": str(temp)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(bench.communicate(), 300)
    figures = dict(line.split(": ", 1) for line in output.decode().splitlines() if ": " in line)
    assert figures["replicas"] == "2", errors.decode()
    database = figures["database"].removeprefix("postgresql (database ").split(",")[0]
    assert database.startswith("bench_load_"), figures["database"]
    assert figures["duplicated"] == "0", figures
    assert float(figures["db_transactions_per_answer"].split()[0]) > 0
    assert "killed_after" in figures and "taken_over" in figures
    async with await psycopg.AsyncConnection.connect(postgres_url) as admin:
        cursor = await admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (database,)
        )
        assert await cursor.fetchone() == (0,), "the run's database is dropped"
    assert list(temp.iterdir()) == [], "nothing is left in the temporary directory"


async def test_several_replicas_without_postgresql_are_refused_in_one_line() -> None:
    bench = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.load", "--replicas", "2"),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(bench.communicate(), 60)
    assert bench.returncode == 2
    assert "several replicas need PostgreSQL: add --database postgresql://" in errors.decode()
