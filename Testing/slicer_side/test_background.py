"""The background runner with real child processes: progress, success, one-line errors, cancel of a tree."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import write_manifest_rows
from Rad4XCNNLib.background import (
    ENGINE_ROOT,
    LIB_ROOT,
    BackgroundJob,
    JobProgress,
    engine_command,
    engine_environment,
    python_executable,
)


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def _gone(pid: int, within: float = 20.0) -> bool:
    """True once ``pid`` no longer exists (a killed orphan is reaped by init shortly after)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):  # a zombie child of ours still answers kill(0): reap it
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return False


def test_cohort_command_runs_in_the_background(synthetic_manifest):
    job = BackgroundJob(engine_command("cohort", synthetic_manifest, "--check-images", python=sys.executable))
    job.start()
    assert job.wait(timeout=120) == 0
    assert job.succeeded and job.error_message() == ""
    assert "30 cases (30 with a lesion), 0 left out" in job.log_text()


def test_bad_manifest_gives_the_engine_error_line(tmp_path, make_case):
    row = make_case("a")
    del row["image"]
    manifest = write_manifest_rows(tmp_path / "m.csv", [row])
    job = BackgroundJob(engine_command("cohort", manifest, python=sys.executable)).start()
    assert job.wait(timeout=120) == 1
    assert not job.succeeded
    assert job.error_message().startswith("error: ")
    assert "lacks the required column(s) image" in job.error_message()
    assert "rad4xcnn: error:" in job.log_text()


def test_progress_events_are_parsed_and_kept_apart_from_the_log():
    job = BackgroundJob(
        _script(
            """
            import logging, sys
            from Rad4XCNNLogic.infra.progress import emit, track
            emit("stage-start", "radiomics")
            for _ in track(range(5), stage="radiomics", desc="cases"):
                pass
            emit("stage-end", "radiomics", seconds=0.1)
            emit("message", "deep", message="loading resnet50")
            print("plain output line")
            print("a warning", file=sys.stderr)
            """
        )
    ).start()
    assert job.wait(timeout=60) == 0
    progress = job.progress
    assert progress.finished_stages == ["radiomics"]
    assert progress.stage == "deep" and progress.message == "loading resnet50"
    lines = job.log_text().splitlines()
    assert "plain output line" in lines and "a warning" in lines
    assert job.take_new_lines() == list(job.log) and job.take_new_lines() == []
    assert "[deep] loading resnet50" in lines
    assert not any(line.startswith("@rad4xcnn") for line in lines)


def test_poll_returns_events_incrementally():
    job = BackgroundJob(
        _script(
            """
            from Rad4XCNNLogic.infra.progress import emit
            for i in range(3):
                emit("progress", "deep", done=i + 1, total=3)
            """
        )
    ).start()
    events = []
    while job.running:
        events += job.poll()
        time.sleep(0.01)
    events += job.poll()
    assert [e["done"] for e in events] == [1, 2, 3]
    assert job.progress.fraction == 1.0
    assert job.progress.text() == "deep: 3/3"


_WORKER = (
    "import os, signal, time\n"
    "from Rad4XCNNLogic.infra.progress import emit\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn worker: only SIGKILL ends it\n"
    "emit('message', 'worker', message=str(os.getpid()))\n"
    "time.sleep(600)\n"
)
#: Like the PythonSlicer launcher: the started process starts the real worker, which ignores SIGTERM.
_STUBBORN_TREE = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {_WORKER!r}]).wait()\n"


def _worker_pid(job) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event in job.poll():
            if event.get("stage") == "worker":
                return int(event["message"])
        time.sleep(0.02)
    raise AssertionError(job.log_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(os.name == "nt", reason="the process-tree check uses POSIX process ids")
def test_cancel_ends_the_whole_process_tree_without_further_polling():
    """The launcher and its worker both end, also when nobody polls the job after Cancel (the widget
    stops its timer)."""
    job = BackgroundJob([sys.executable, "-c", _STUBBORN_TREE]).start()
    worker, launcher = _worker_pid(job), job.pid
    job.cancel(grace=0.5)
    # cancel() returns at once (it never waits on the GUI thread): the stubborn worker is still there
    assert _alive(worker)
    job.cancel(grace=0.5)  # a second click changes nothing
    assert _gone(worker) and _gone(launcher)  # forced after the grace period, with no poll()
    assert job.wait(timeout=30) is not None
    assert job.cancelled and not job.succeeded
    assert job.error_message() == "cancelled"


@pytest.mark.skipif(os.name == "nt", reason="the process-tree check uses POSIX process ids")
def test_a_job_never_outlives_its_application():
    """An application (here a Python process) that exits during a run ends the run's whole tree."""
    app = (
        "import sys, time\n"
        "from Rad4XCNNLib.background import BackgroundJob\n"
        f"job = BackgroundJob([sys.executable, '-c', {_STUBBORN_TREE!r}]).start()\n"
        "deadline = time.monotonic() + 60\n"
        "while time.monotonic() < deadline:\n"
        "    events = [e for e in job.poll() if e.get('stage') == 'worker']\n"
        "    if events:\n"
        "        print(events[0]['message'], flush=True)\n"
        "        break\n"
        "    time.sleep(0.02)\n"
        "# the application quits now, with the job still running\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ENGINE_ROOT), str(LIB_ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", app], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    worker = int(done.stdout.split()[0])
    assert _gone(worker)


def test_failure_without_an_engine_error_line():
    job = BackgroundJob(_script("import sys; print('boom', file=sys.stderr); sys.exit(5)")).start()
    assert job.wait(timeout=60) == 5
    assert job.error_message() == "the background process failed (exit status 5): boom"


def test_environment_and_command():
    env = engine_environment({"PATH": "/bin", "PYTHONPATH": "/elsewhere"})
    assert env["RAD4XCNN_PROGRESS"] == "jsonl"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ENGINE_ROOT), str(LIB_ROOT), "/elsewhere"]
    assert (LIB_ROOT / "Rad4XCNNLib" / "__init__.py").exists()
    assert (ENGINE_ROOT / "Rad4XCNNLogic" / "__init__.py").exists()
    assert engine_command("run", "--out", "x", python="py") == [
        "py",
        "-m",
        "Rad4XCNNLogic",
        "run",
        "--out",
        "x",
    ]
    assert python_executable(in_slicer=False) == sys.executable


@pytest.mark.skipif(os.name == "nt", reason="a POSIX launcher script stands in for PythonSlicer")
def test_python_slicer_is_found_on_path(tmp_path, monkeypatch):
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text('#!/bin/sh\nexec python3 "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert python_executable(in_slicer=True) == str(launcher)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="PythonSlicer was not found"):
        python_executable(in_slicer=True)


def test_progress_bookkeeping():
    progress = JobProgress()
    assert progress.text() == "starting" and progress.fraction is None
    progress.update({"event": "progress", "stage": "radiomics", "done": 2, "total": 8, "message": "cases"})
    assert progress.fraction == 0.25 and progress.text() == "radiomics: 2/8 - cases"
    progress.update({"event": "progress", "stage": "radiomics", "done": 3, "message": "radiomics"})
    assert progress.text() == "radiomics: 3/8"  # a message that repeats the stage is not shown twice
    progress.update({"event": "stage-start", "stage": "deep"})
    assert progress.fraction is None and progress.stage == "deep"
    progress.update({"event": "stage-end", "stage": "deep"})
    assert progress.finished_stages == ["deep"]


def test_a_job_starts_once():
    job = BackgroundJob(_script("pass")).start()
    with pytest.raises(RuntimeError, match="already been started"):
        job.start()
    job.wait(timeout=60)
