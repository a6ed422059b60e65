"""Worker "hosts" as Linux network namespaces, for tests of the engine across machines.

Each host is a network namespace joined to this (the root) namespace by a veth link. Inside it
only the link exists: a worker there reaches PostgreSQL and Redis at the root end of its link,
where a forwarder passes the connections on to the machine's servers on loopback. Taking the
link down partitions that host from both at once, the way a switch port or a cable fails: its
open connections stall (no reset), and resume when the link comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from config.celery_app import app
from tooling.processes import WorkerProcess

PREFIX = "sfnet"  # namespaces and links this module makes; stale ones are swept by pid


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}{os.getpid()}probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    pair = _ip("link", "add", f"{PREFIX}{os.getpid()}", "type", "veth", check=False)
    if pair.returncode != 0:
        return f"veth links cannot be made here: {pair.stderr.strip()}"
    _ip("link", "del", f"{PREFIX}{os.getpid()}", check=False)
    return None


def sweep_stale() -> None:
    """Delete namespaces left by a test run that was killed before its cleanup ran."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = name[len(PREFIX) :].split("h")[0]
        if name.startswith(PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", name, check=False)


@dataclass
class Host:
    """One namespace and its link; ``address`` is the root end, ``peer`` the host's end."""

    index: int
    subnet: int

    @property
    def name(self) -> str:
        return f"{PREFIX}{os.getpid()}h{self.index}"

    @property
    def link(self) -> str:  # the root end's interface name (at most 15 characters)
        return f"sfn{os.getpid()}r{self.index}"

    @property
    def address(self) -> str:
        return f"10.{self.subnet}.{self.index}.1"

    @property
    def peer(self) -> str:
        return f"10.{self.subnet}.{self.index}.2"

    def create(self) -> Host:
        inner = f"sfn{os.getpid()}n{self.index}"
        _ip("netns", "add", self.name)
        _ip("link", "add", self.link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", self.name)
        _ip("addr", "add", f"{self.address}/30", "dev", self.link)
        _ip("link", "set", self.link, "up")
        for args in (
            ("addr", "add", f"{self.peer}/30", "dev", inner),
            ("link", "set", inner, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", self.name, *args)
        return self

    def delete(self) -> None:
        # Deleting the namespace deletes its end of the link, and with it the pair.
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.link, check=False)

    def partition(self) -> None:
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")

    def url(self, url: str) -> str:
        """``url`` (a database or Redis URL on loopback) as this host reaches it."""
        parts = urlsplit(url)
        auth, _, hostport = parts.netloc.rpartition("@")
        port = hostport.rsplit(":", 1)[1] if ":" in hostport else ""
        netloc = (f"{auth}@" if auth else "") + self.address + (f":{port}" if port else "")
        return urlunsplit(parts._replace(netloc=netloc))


class Forwarder:
    """TCP forwarding from (address, port) to (upstream host, port), on an asyncio loop in a
    thread of this process: the hosts' way to the machine's PostgreSQL and Redis."""

    def __init__(self, routes: list[tuple[str, int, str, int]]) -> None:
        self.routes = routes
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Forwarder:
        self.thread.start()
        for address, port, up_host, up_port in self.routes:
            serve = asyncio.start_server(self._handler(up_host, up_port), address, port)
            asyncio.run_coroutine_threadsafe(serve, self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def _handler(self, up_host: str, up_port: int):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        return handle


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


class HostWorker(WorkerProcess):
    """A ``celery worker`` node run inside a host's namespace."""

    def __init__(self, *, host: Host, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.host = host
        super().__init__(**kwargs)

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.host.name, *super().argv()]

    @property
    def name(self) -> str:
        return self.node.replace("%h", socket.gethostname())

    def consume(self, queue: str) -> None:
        """Start taking tasks from ``queue`` (a worker started on an idle queue waits so)."""
        replies = app.control.add_consumer(queue, destination=[self.name], reply=True)
        assert replies, f"{self.name} did not answer"

    def stop_consuming(self, queue: str) -> None:
        replies = app.control.cancel_consumer(queue, destination=[self.name], reply=True)
        assert replies, f"{self.name} did not answer"

    def finished_tasks(self, name: str) -> int:
        """Tasks ``name`` this node has finished (its log's ``succeeded`` lines)."""
        return sum(
            1 for line in self.log_text().splitlines() if f"{name}[" in line and "succeeded" in line
        )
