"""The life of a platform service as a process the hub starts: the quotas service
(:mod:`quotas.service.app`) and the SSH gateway (:mod:`sshgateway.server`) are both a
:class:`ServiceApp`. It logs to stderr in one format (its own lines, its modules' and the
libraries'), listens once its port is free, and stops at SIGTERM or SIGINT or when the hub that
started it is gone; it exits with a message that says what to do.

Standard library and traitlets only: the SSH gateway imports it and reaches the hub over HTTP alone.
"""

# i18n: operator: a service's start and stop, in its log and exit messages for the operator
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from traitlets import Float, default
from traitlets.config import Application

T = TypeVar("T")

# set by the hub's config in the environment of every service it starts: its own pid, known to the
# service from its first instruction on, however soon the hub dies
HUB_PID_VARIABLE = "AIDC_HUB_PID"
# the parent at import, for a service started without it (by hand, or by another supervisor)
_PARENT_AT_IMPORT = os.getppid()
_PR_SET_PDEATHSIG = 1


def hub_pid() -> int:
    """The pid of the hub that started this process: ``$AIDC_HUB_PID``, else the parent this
    process had when it imported this module."""
    value = os.environ.get(HUB_PID_VARIABLE, "")
    return int(value) if value.isdigit() else _PARENT_AT_IMPORT


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``);
    False where that is not available (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def hub_is_gone(expected: int) -> bool:
    """True when this process's parent is no longer ``expected`` (the hub died: we were adopted)."""
    return os.getppid() != expected


class ServiceApp(Application):
    """A service of the hub, run as its own process (``c.JupyterHub.services``)."""

    # how messages name the service ("The quotas service cannot listen ..."), and the
    # environment variable that sets its port, which those messages suggest
    service_title = "service"
    port_variable = ""
    # loggers of libraries that say too much at INFO: only their warnings are shown
    quiet_loggers: tuple[str, ...] = ()

    bind_timeout = Float(
        15.0,
        help="""Seconds to wait for the port at start when another process holds it (the service of a
        hub that was killed, until it notices: a second or two), before giving up with a message;
        e.g. 60 on a slow machine.
        """,
    ).tag(config=True)

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

    @default("log_format")
    def _default_log_format(self) -> str:
        return f"[%(levelname)1.1s %(asctime)s {self.name}] %(message)s"

    def get_default_logging_config(self) -> dict[str, Any]:
        """traitlets' stderr handler, for this application's log and every other logger too (its
        modules', tornado's), in one format; ``quiet_loggers`` only from WARNING."""
        config: dict[str, Any] = super().get_default_logging_config()
        if "loggers" in config:  # traitlets logs nothing under pythonw
            config["root"] = {"level": config["handlers"]["console"]["level"], "handlers": ["console"]}
            config["loggers"].update({name: {"level": "WARNING"} for name in self.quiet_loggers})
        return config

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        self.log.debug("%s starting", self.name)  # the first use of the log sets up logging for every module
        self.watch_hub()

    def watch_hub(self) -> None:
        """Stop with the hub that started this process, even when it died before we looked: a
        service of a killed hub must not keep its port. The kernel sends SIGTERM when the parent
        dies from now on; a parent that is already not the hub (``$AIDC_HUB_PID``) means it died
        before, and this process exits at once."""
        if os.environ.get(HUB_PID_VARIABLE) is None:
            return  # not started by the hub (by hand, a test, its own pod): nothing to follow
        # first the signal, then the check: a hub dying in between is seen by one or the other
        stop_with_parent()
        hub = hub_pid()
        if hub_is_gone(hub):
            self.log.warning("The hub that started the %s (pid %d) is gone; not starting", self.service_title, hub)
            raise SystemExit(0)

    def exit_with(self, message: str) -> NoReturn:
        """Log ``message`` (what went wrong and what to do about it) and exit with status 1."""
        self.log.critical(message)
        raise SystemExit(1)

    async def listen(self, bind: Callable[[], Awaitable[T]], where: str) -> T:
        """``bind()`` the service's port (``where``, for messages), waiting up to ``bind_timeout``
        seconds while another process holds it: the service of a hub that was killed may hold it
        until it notices (:meth:`wait_for_stop`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bind_timeout
        while True:
            try:
                return await bind()
            except OSError as e:
                if e.errno != errno.EADDRINUSE or loop.time() > deadline:
                    self.exit_with(
                        f"The {self.service_title} cannot listen on {where}: {e.strerror}. Another program"
                        f" uses the port: stop it, or set {self.port_variable} to a free port."
                    )
                await asyncio.sleep(0.5)

    async def wait_for_stop(self) -> None:
        """Return at SIGTERM or SIGINT, or once the hub that started this process is gone (killed:
        it could not stop us), so that the hub's next start can run its own service, with its new
        token, on the same port."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.create_task(self._stop_when_orphaned(stop))
        try:
            await stop.wait()
        finally:
            watch.cancel()
        self.log.info("Stopping the %s", self.service_title)

    async def _stop_when_orphaned(self, stop: asyncio.Event) -> None:
        # the pid known from the start, not read now: the hub may have died already
        parent = hub_pid()
        while not stop.is_set():
            if hub_is_gone(parent):
                self.log.warning("The hub that started the %s (pid %d) is gone; stopping", self.service_title, parent)
                stop.set()
                return
            await asyncio.sleep(1)
