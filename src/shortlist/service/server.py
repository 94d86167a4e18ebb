"""Running the app under uvicorn: one process, or N worker processes sharing the port.

One process builds the app from $SHORTLIST_WORKSPACE (`app_from_env`) and loads the workspace
at its startup. With `workers` > 1 (`Prefork`), one process loads the workspace, then forks
the workers: they share what it loaded (the arrays, the models, the index: copy-on-write
pages that a worker only reads stay the parent's), so each worker adds little memory and
starts at once. The parent serves nothing; it restarts a worker that dies, and runs the watch:
when a build replaces the workspace (or a worker was told to reload), it loads the new version
and forks new workers before it stops the old ones (each finishes its requests in flight).
The workers take turns accepting from the port's one socket (`_taking_turns`), so that a burst
of new connections spreads over them (an event loop of its own would take every connection
waiting at once: all of a client's keep-alive connections could land on one worker, and stay
there). The Prometheus metrics of several workers are kept in files of a temporary folder
(`PROMETHEUS_MULTIPROC_DIR`, unless already set) that /metrics adds up, so any worker answers
for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from shortlist.service import search
from shortlist.service.app import WORKSPACE_ENV, create_app

log = logging.getLogger("shortlist.service")

APP = "shortlist.service.app:app_from_env"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GRACEFUL_SECONDS = 10  # a stopping worker's requests in flight, at most
ACCEPT_PAUSE = 0.1  # seconds before accepting again after accept failed (no descriptor free)
RESTART_PAUSE = 1.0  # seconds between restarts of dying workers (a crash loop stays slow)
STARTUP_FAILURE = 3  # exit status of a worker that never served, and of the service then
#: workers failing to start this many times in a row (none ending otherwise between them) stop
#: the service: the same forked state fails the same way, so restarting it forever serves nothing
MAX_STARTUP_FAILURES = 3
PR_SET_PDEATHSIG = 1  # prctl(2): a signal to this process when its parent dies


def serve(
    workspace: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the workspace until SIGTERM or SIGINT (requests in flight finish first)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # the service's own lines (workspace loaded, unhandled errors) as uvicorn's, same format
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["shortlist"] = {
        "handlers": ["default"],
        "level": log_level.upper(),
        "propagate": False,
    }
    os.environ[WORKSPACE_ENV] = str(Path(workspace).resolve())
    metrics_dir = None
    if workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="shortlist-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": log_level, "access_log": access_log,
        "log_config": log_config, "timeout_graceful_shutdown": GRACEFUL_SECONDS,
    }  # fmt: skip
    try:
        if workers > 1:
            from prometheus_client import values

            # imported before the folder was named: the metrics made from now on count in it
            values.ValueClass = values.get_value_class()
            code = Prefork(uvicorn.Config(create_app(workspace), **options), workers).run()
            if code:
                raise SystemExit(code)  # as uvicorn.run does when one worker cannot start
        else:
            uvicorn.run(APP, factory=True, **options)
    finally:
        if metrics_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


class Prefork:
    """`workers` uvicorn servers forked from this process once it has loaded the workspace
    (see the module's docstring). `run` returns 0 when SIGTERM or SIGINT has stopped them
    all, or STARTUP_FAILURE after MAX_STARTUP_FAILURES workers in a row failed to start (their
    errors logged): the service then stops, for a supervisor to see, instead of re-forking
    the same failure every second."""

    def __init__(self, config: Any, workers: int):
        self.config, self.workers = config, workers
        self.state = config.app.state.shortlist
        self.generation = 0  # the version the workers of this generation were forked from
        self.children: dict[int, int] = {}  # pid -> generation
        self.stopping: int | None = None  # the signal that asked to stop
        self.startup_failures = 0  # workers in a row that ended before they served
        self._last_restart = 0.0
        # shared by the workers: (pid, monotonic time) of the last connection accepted
        self.turn = multiprocessing.RawArray(ctypes.c_double, 2)

    def run(self) -> int:
        sock = self.config.bind_socket()  # bound before the load: the port is taken at once
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its pool forks badly
            log.info("shortlist: loading workspace %s", self.state.workspace.root)
            self.state.load(watch=False)
            search.warm(self.state)  # the sentence model too: shared, not loaded per worker
            log.info(
                "shortlist: workspace %s loaded in %.1f s; forking %d workers",
                self.state.workspace.root, self.state.load_seconds or 0.0, self.workers,
            )  # fmt: skip
            if self.stopping is None:  # not stopped while it loaded
                self._fork(self.workers, sock)
            watch = self.state.watch_seconds
            next_look = time.monotonic() + watch
            while self.stopping is None:
                self._reap(sock)
                if self.startup_failures >= MAX_STARTUP_FAILURES:
                    log.error(
                        "shortlist: workers failed to start %d times in a row (the errors "
                        "above); stopping the service", self.startup_failures,
                    )  # fmt: skip
                    break
                if watch > 0 and time.monotonic() >= next_look:
                    try:
                        self._follow(sock)
                    except Exception:  # the workers serve on: this process must not end
                        log.exception("shortlist: the watch failed; the workers serve on")
                    next_look = time.monotonic() + watch
                time.sleep(0.1)
            self._stop_all()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            sock.close()
            self.state.close()
        return STARTUP_FAILURE if self.startup_failures >= MAX_STARTUP_FAILURES else 0

    def _follow(self, sock: socket.socket) -> None:
        """One look of the watch; after a reload, new workers, then the old ones stop."""
        outcome = self.state.follow()
        if outcome is None:
            return
        try:  # the worker that asked answers with it
            self.state.tell_reloaded(outcome)
        except OSError as exc:
            log.warning("shortlist: the reload's answer could not be written: %s", exc)
        if "error" not in outcome:
            self.generation += 1
            old = list(self.children)
            self._fork(self.workers, sock)
            self._signal(old, signal.SIGTERM)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = signum

    def _fork(self, n: int, sock: socket.socket) -> None:
        self.state.released()
        gc.collect()
        gc.freeze()  # the collector never touches what the workers share (no copy by a walk)
        for _ in range(n):
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:
                self._worker(sock, parent)  # never returns
            self.children[pid] = self.generation

    def _worker(self, sock: socket.socket, parent: int) -> None:
        server = None
        code = STARTUP_FAILURE
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # uvicorn's own handlers take over
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _die_with_parent(parent)
            self.state.after_fork()
            server = _taking_turns(self.config, sock, self.turn, self.state.accept_turn)
            server.run()
            code = 0 if server.started else STARTUP_FAILURE  # the app's startup failed
        except SystemExit as exc:  # uvicorn's own: its status 3 when the app cannot start
            if server is None or not server.started:
                code = STARTUP_FAILURE
            else:  # sys.exit's own meaning: None is 0, an int itself, anything else 1
                code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a worker's end, logged; the parent restarts it
            log.exception("shortlist: worker %d failed", os.getpid())
            code = 1 if server is not None and server.started else STARTUP_FAILURE
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self, sock: socket.socket) -> None:
        """Collects the workers that ended; one of the serving generation that ended by itself
        (a crash) is replaced, unless workers keep failing to start (`startup_failures`)."""
        for pid, status, generation in self._collect():
            if generation != self.generation or self.stopping is not None:
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == STARTUP_FAILURE:
                self.startup_failures += 1
                if self.startup_failures >= MAX_STARTUP_FAILURES:
                    return
            else:
                self.startup_failures = 0
            log.warning("shortlist: worker %d ended (%s): forking another", pid, _ended(status))
            wait = self._last_restart + RESTART_PAUSE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_restart = time.monotonic()
            self._fork(1, sock)

    def _collect(self, block: bool = False) -> list[tuple[int, int, int | None]]:
        """The workers that ended since the last look (waiting for one with `block`), taken
        out of `children`: (pid, wait status, generation)."""
        out: list[tuple[int, int, int | None]] = []
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0 if block and not out else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            out.append((pid, status, self.children.pop(pid, None)))
        return out

    def _signal(self, pids: list[int], signum: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                self.children.pop(pid, None)

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each finishes its requests in flight), SIGKILL to those
        still running after the grace period."""
        self._signal(list(self.children), signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_SECONDS + 5
        while self.children and time.monotonic() < deadline:
            self._collect()
            time.sleep(0.05)
        self._signal(list(self.children), signal.SIGKILL)
        while self.children:
            self._collect(block=True)


def _taking_turns(config: Any, sock: socket.socket, turn: Any, seconds: float) -> Any:
    """A uvicorn server accepting from the shared `sock` in turns with the other workers.

    An event loop given the listening socket (uvloop's, as asyncio's) accepts every connection
    waiting each time it wakes: with 2 workers, 4 of 24 runs of `wrk -c8` ran at one worker's
    throughput, all 8 new connections on one worker for as long as they stayed open. Here a
    worker accepts one connection at a time, and one that took the last (`turn`: its pid and
    when, shared by the workers) leaves the next to the others for up to `seconds` (`[service]
    accept_turn_ms`): a worker busy with requests (its loop waiting for the GIL) still gets its
    share a few milliseconds later, and a dead or stuck one delays the others' new connections
    by `seconds` at most. The socket stays the one all workers share, so a stopping worker
    leaves the connections still waiting to the others (per-worker SO_REUSEPORT sockets would
    spread them by a hash, but reset those a stopping worker held queued)."""
    import uvicorn

    class TakingTurns(uvicorn.Server):
        acceptor: asyncio.Task[None] | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])  # the app's startup; no listener of the loop's
            sock.listen(self.config.backlog)
            sock.setblocking(False)
            self.acceptor = asyncio.get_running_loop().create_task(self._accept())

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.acceptor is not None:  # no new connection from now on
                self.acceptor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.acceptor
            await super().shutdown(sockets=[])

        async def _accept(self) -> None:
            loop = asyncio.get_running_loop()
            config, me = self.config, float(os.getpid())

            def protocol() -> asyncio.Protocol:  # as uvicorn's own startup makes them
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state, app_state=self.lifespan.state
                )

            while True:
                await _readable(loop, sock)
                while turn[0] == me and (wait := turn[1] + seconds - time.monotonic()) > 0:
                    await asyncio.sleep(min(wait, 0.001))  # the others' turn, unless they are late
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:  # another worker took it
                    continue
                except OSError as exc:  # out of descriptors, a connection reset while queued
                    log.warning("shortlist: accepting a connection failed: %s", exc)
                    await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                turn[0], turn[1] = me, time.monotonic()
                try:
                    conn.setblocking(False)
                    await loop.connect_accepted_socket(protocol, conn, ssl=config.ssl)
                except Exception:  # noqa: BLE001 - this connection only; the worker serves on
                    log.exception("shortlist: setting up an accepted connection failed")
                    conn.close()

    return TakingTurns(config)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Returns once `sock` has a connection waiting (or had: another worker may take it)."""
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def _die_with_parent(parent: int) -> None:
    """A worker ends when its parent does (killed with no chance to stop it): Linux's prctl;
    elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call (the child was adopted)
        os._exit(1)


def _ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
