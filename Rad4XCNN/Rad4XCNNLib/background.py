"""Run an engine command in a background process: progress parsed from its output, cancel, and the log kept.

The 3D Slicer module runs heavy work (deep features, radiomics, CAMs) through
``PythonSlicer -m Rad4XCNNLogic`` so that its GUI never freezes. This module has no Qt in it: the widget calls
:meth:`BackgroundJob.poll` from a timer, shows :attr:`BackgroundJob.progress`, and calls
:meth:`BackgroundJob.cancel` for its Cancel button. Progress arrives as the ``@rad4xcnn {json}`` lines of
:mod:`Rad4XCNNLogic.infra.progress`.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import Rad4XCNNLogic
from Rad4XCNNLogic.infra.progress import ENV as PROGRESS_ENV
from Rad4XCNNLogic.infra.progress import parse_progress_line

log = logging.getLogger(__name__)

#: The engine package's parent folder: put on PYTHONPATH so that ``-m Rad4XCNNLogic`` runs the very engine
#: this process imported (next to the module in an installed extension, the repository root in a checkout).
ENGINE_ROOT = Path(Rad4XCNNLogic.__file__).resolve().parent.parent
#: The folder that holds ``Rad4XCNNLib`` (the module's folder): on PYTHONPATH too, for the helper processes
#: that run Slicer-side code (``-m Rad4XCNNLib.device``, ``-m Rad4XCNNLib.radiomics_check``).
LIB_ROOT = Path(__file__).resolve().parent.parent
#: Seconds between the polite signal and the forced end of a cancelled job (and at application exit).
GRACE_SECONDS = 3.0
#: Jobs whose process may still run; ended by :func:`end_all_jobs` when the application exits.
_LIVE_JOBS: weakref.WeakSet = weakref.WeakSet()


def python_executable(in_slicer: bool | None = None) -> str:
    """The Python that runs the engine: ``PythonSlicer`` inside 3D Slicer, else this interpreter.

    Inside Slicer, ``PythonSlicer`` (a launcher that sets up Slicer's Python environment) is looked up on
    PATH and next to ``sys.executable``. ``in_slicer`` None means: detect (``slicer.app`` exists).
    """
    if in_slicer is None:
        in_slicer = hasattr(sys.modules.get("slicer"), "app")
    if in_slicer:
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        found = shutil.which("PythonSlicer")
        if found:
            return found
        beside = Path(sys.executable).with_name(name)
        if beside.exists():
            return str(beside)
        raise FileNotFoundError("PythonSlicer was not found on PATH nor next to Slicer's Python")
    return sys.executable


def engine_command(*args: str, python: str | None = None) -> list[str]:
    """The command line that runs ``rad4xcnn ARGS`` through ``python -m Rad4XCNNLogic``.

    Examples
    --------
    >>> engine_command("cohort", "m.csv", python="python")
    ['python', '-m', 'Rad4XCNNLogic', 'cohort', 'm.csv']
    """
    return [python or python_executable(), "-m", "Rad4XCNNLogic", *map(str, args)]


def engine_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a background engine process: ``base`` (default: this process's environment)
    plus machine-readable progress, unbuffered output, and this engine first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env[PROGRESS_ENV] = "jsonl"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    paths = [str(ENGINE_ROOT), str(LIB_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass
class JobProgress:
    """Where a background job is: the current stage, its done/total counts, the last message."""

    stage: str = ""
    done: int | None = None
    total: int | None = None
    message: str = ""
    finished_stages: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float | None:
        """Fraction of the current stage done, or None when its size is unknown."""
        if self.done is None or not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))

    def text(self) -> str:
        """One line for a status label, e.g. ``radiomics: 12/40``."""
        if not self.stage:
            return self.message or "starting"
        message = self.message if self.message and self.message != self.stage else ""
        if self.total:
            return f"{self.stage}: {self.done or 0}/{self.total}" + (f" - {message}" if message else "")
        return f"{self.stage}" + (f": {message}" if message else "")

    def update(self, event: Mapping) -> None:
        kind = event.get("event")
        stage = str(event.get("stage") or self.stage)
        if kind == "stage-end":
            if stage and stage not in self.finished_stages:
                self.finished_stages.append(stage)
            self.done = self.total
            self.stage = stage
            return
        if stage != self.stage:
            self.done, self.total = None, None
        self.stage = stage
        if "done" in event:
            self.done = event.get("done")
        if "total" in event:
            self.total = event.get("total")
        if event.get("message") is not None:
            self.message = str(event["message"])


class BackgroundJob:
    """One command running in a child process, read without blocking.

    Parameters
    ----------
    argv : the command, e.g. from :func:`engine_command`.
    env : its environment (default :func:`engine_environment`).
    cwd : its working folder.
    max_log_lines : how many output lines the log keeps (the oldest are dropped first).

    Examples
    --------
    >>> job = BackgroundJob(engine_command("cohort", "manifest.csv"))  # doctest: +SKIP
    >>> job.start()  # doctest: +SKIP
    >>> while job.running:  # the Slicer widget does this from a qt.QTimer instead  # doctest: +SKIP
    ...     events = job.poll()
    ...     print(job.progress.text())
    >>> job.returncode, job.error_message()  # doctest: +SKIP
    (0, '')
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        max_log_lines: int = 20000,
    ):
        self.argv = [str(a) for a in argv]
        self.env = dict(env) if env is not None else engine_environment()
        self.cwd = None if cwd is None else str(cwd)
        self.log: collections.deque[str] = collections.deque(maxlen=max_log_lines)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self.progress = JobProgress()
        self.cancelled = False
        self._new_lines: list[str] = []
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- lifecycle
    def start(self) -> BackgroundJob:
        """Start the process (in its own process group, so that cancel ends its children too)."""
        if self._process is not None:
            raise RuntimeError("this job has already been started")
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            kwargs["start_new_session"] = True
        log.info("starting: %s", subprocess.list2cmdline(self.argv))
        self._process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        for stream, name in ((self._process.stdout, "out"), (self._process.stderr, "err")):
            reader = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            reader.start()
            self._readers.append(reader)
        _LIVE_JOBS.add(self)
        return self

    def _read(self, stream, name: str) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._lines.put((name, line.rstrip("\r\n")))
        except (OSError, ValueError):  # the pipe closed under us when the process was killed
            pass
        finally:
            self._lines.put((name, None))

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        """True while the started process itself runs (its output may still be unread after it ends)."""
        return self._process is not None and self._process.poll() is None

    @property
    def running(self) -> bool:
        """True while the process runs or its output has not all been read."""
        if self._process is None:
            return False
        return (
            self._process.poll() is None
            or any(r.is_alive() for r in self._readers)
            or not self._lines.empty()
        )

    @property
    def returncode(self) -> int | None:
        """The exit status once finished (negative: ended by a signal), else None."""
        if self._process is None or self.running:
            return None
        return self._process.returncode

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.cancelled

    def poll(self) -> list[dict]:
        """Read the output so far without blocking; the new progress events (also in :attr:`progress`)."""
        events = []
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            event = parse_progress_line(line) if name == "out" else None
            if event is not None:
                self.progress.update(event)
                events.append(event)
                if event.get("event") == "message" and event.get("message"):
                    self._log(f"[{event.get('stage', '')}] {event['message']}")
                continue
            self._log(line)
            if name == "err":
                self.stderr_tail.append(line)
        return events

    def _log(self, line: str) -> None:
        self.log.append(line)
        self._new_lines.append(line)
        if len(self._new_lines) > self.log.maxlen:
            del self._new_lines[: -self.log.maxlen]

    def take_new_lines(self) -> list[str]:
        """The log lines that arrived since the last call (for a log view that appends them)."""
        lines, self._new_lines = self._new_lines, []
        return lines

    def wait(self, timeout: float | None = None, idle: Callable[[], object] | None = None) -> int | None:
        """Wait until the process ends (or ``timeout`` seconds pass), reading its output; the exit status.

        ``idle`` is called between reads: inside 3D Slicer, pass ``slicer.app.processEvents`` so that the
        GUI stays responsive while a self-test waits for an engine run.
        """
        if self._process is None:
            raise RuntimeError("the job has not been started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if idle is not None:
                idle()
            time.sleep(0.02)
        self.poll()
        return self.returncode

    def cancel(self, grace: float = GRACE_SECONDS) -> None:
        """Ask the process and every process it started to end, and return at once (never blocks).

        The polite signal (SIGTERM to the process group; ``taskkill /T`` on Windows) goes now; ``grace``
        seconds later a watcher thread ends whatever of the tree is left by force (SIGKILL to the group;
        ``taskkill /T /F``), whether or not anyone polls the job any more.
        """
        if self._process is None or self._process.poll() is not None or self.cancelled:
            return
        self.cancelled = True
        self._log("cancelled by the user")
        _signal_process_tree(self._process, force=False)
        self._reaper = threading.Thread(target=self._force_after, args=(grace,), daemon=True)
        self._reaper.start()

    def _force_after(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._process.poll() is None:
            time.sleep(0.05)
        _force_tree(self._process)

    def end(self, grace: float = GRACE_SECONDS) -> None:
        """End the process tree and wait for it (at most ``grace`` seconds before the forced end): what the
        application's exit does, where nothing may be left running afterwards."""
        if self._process is None or self._process.poll() is not None:
            return  # not started, or over (a cancelled tree is forced by its watcher thread)
        if not self.cancelled:
            self.cancelled = True
            self._log("ended with the application")
        _signal_process_tree(self._process, force=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=grace)
        _force_tree(self._process)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=grace)

    def __del__(self):  # never leave an orphan behind when the widget is closed
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            _signal_process_tree(process, force=True)

    # ------------------------------------------------------------------------------------------ errors
    def error_message(self) -> str:
        """One line saying why the job failed ('' on success): the engine's own error line where present."""
        code = self.returncode
        if code is None or code == 0:
            return ""
        if self.cancelled:
            return "cancelled"
        for line in reversed(self.stderr_tail):
            if line.startswith("rad4xcnn: "):
                return line.removeprefix("rad4xcnn: ")
        last = next((line for line in reversed(self.stderr_tail) if line.strip()), "")
        reason = f"ended by signal {-code}" if code < 0 else f"exit status {code}"
        return f"the background process failed ({reason})" + (f": {last.strip()}" if last else "")

    def log_text(self) -> str:
        """The whole kept log (output and errors, in arrival order), for an error dialog's details."""
        return "\n".join(self.log)


# ------------------------------------------------------------------------------------- helper processes
#: The line that carries a helper's answer (a JSON object) among its other output.
RESULT_PREFIX = "@rad4xcnn-result "
#: Seconds a helper may take: importing torch the first time on a slow disk, building a backbone.
HELPER_TIMEOUT = 600.0


def print_answer(answer: Mapping) -> None:
    """Write a helper process's answer (a JSON object) for :func:`run_helper` to read."""
    print(RESULT_PREFIX + json.dumps(answer), flush=True)


def run_helper(
    module: str, *args: str, env: Mapping[str, str] | None = None, idle=None, python: str | None = None
) -> dict:
    """Run ``python -m MODULE ARGS`` (PythonSlicer inside Slicer) and return the answer it printed.

    For work that must not happen in Slicer's own Python (importing torch, importing the PyRadiomics that
    the engine will use). ``idle`` is called while waiting (inside Slicer ``slicer.app.processEvents``, so
    that the GUI stays responsive); ``env`` is the base of :func:`engine_environment`.
    """
    what = " ".join([module.rsplit(".", 1)[-1], *map(str, args)])
    argv = [python or python_executable(), "-m", module, *map(str, args)]
    job = BackgroundJob(argv, env=engine_environment(env)).start()
    code = job.wait(timeout=HELPER_TIMEOUT, idle=idle)
    if code is None:
        job.cancel()
        raise RuntimeError(f"'{what}' did not finish within {HELPER_TIMEOUT:.0f} s")
    if code != 0:
        raise RuntimeError(f"'{what}' failed: {job.error_message()}")
    for line in reversed(job.log):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"'{what}' gave no answer: {job.log_text()[-500:]}")


def end_all_jobs(grace: float = GRACE_SECONDS) -> int:
    """End every job started in this process that may still run (registered with :mod:`atexit`, and called
    by the module when Slicer quits); returns how many were ended. A job never outlives its application."""
    jobs = [job for job in list(_LIVE_JOBS) if job.pid is not None and job.alive]
    for job in jobs:
        job.end(grace)
    return len(jobs)


atexit.register(end_all_jobs)


def _force_tree(process: subprocess.Popen) -> None:
    """The forced end after the grace period. On POSIX the process group is killed even when its leader is
    gone (a worker that ignored SIGTERM keeps the group, so its id cannot be reused meanwhile); on Windows
    ``taskkill /T /F`` needs the process itself (a finished one's id may belong to another program now)."""
    if os.name != "nt" or process.poll() is None:
        _signal_process_tree(process, force=True)


def _signal_process_tree(process: subprocess.Popen, force: bool) -> None:
    """Signal ``process`` and its descendants without waiting: SIGTERM (``force``: SIGKILL) to its process
    group on POSIX; ``taskkill /T`` (``/F`` when forced) on Windows. A tree that is already gone is fine."""
    if os.name == "nt":
        try:
            subprocess.run(
                ["taskkill", "/T", *(["/F"] if force else []), "/PID", str(process.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError) as error:  # taskkill missing or hung: say so, go on
            log.warning("could not end process %s: %s", process.pid, error)
        return
    # start() made the process a session (and group) leader, so its group id is its pid; the group outlives
    # the launcher, which lets a forced kill reach children that are still running.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
