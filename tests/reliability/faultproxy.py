"""A loopback TCP proxy that forwards to one target and adds latency, stalls or cuts on command.

It runs an asyncio loop in a daemon thread, so a synchronous test controls it while the bot
(another process) talks through it:

    proxy = FaultProxy("127.0.0.1", redis_port).start()
    env["REDIS_ADMIN_URL"] = f"redis://admin:pw@127.0.0.1:{proxy.port}/0"
    proxy.set_latency(0.5)   # every chunk, both directions, waits half a second
    proxy.stall()            # bytes are held (connections stay open): a hung back end
    proxy.resume()
    proxy.cut()              # every open connection is reset now
    proxy.refuse(True)       # new connections are reset at once: a back end that is down

Nothing here knows any protocol: faults land between bytes, as a network fault would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``target_host:target_port`` with injectable faults."""

    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy") -> None:
        self.target = (target_host, target_port)
        self.name = name
        self.port = 0
        self.latency = 0.0
        self.accepted = 0  # connections accepted since start (a test can see traffic happened)
        self.refused = 0
        self._refuse = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._ready = threading.Event()
        self._stalled_readers = 0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self, port: int = 0) -> FaultProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"faultproxy-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fault proxy {self.name} did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- faults ------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every forwarded chunk, in both directions, by ``seconds``."""
        self.latency = max(0.0, seconds)

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open (a hung back end)."""
        self._call(lambda: self._require_flowing().clear())

    def resume(self) -> None:
        self._call(lambda: self._require_flowing().set())

    def cut(self) -> int:
        """Reset every open connection now; returns how many were cut."""
        done: list[int] = []

        def abort_all() -> None:
            done.append(len(self._transports))
            for transport in list(self._transports):
                transport.abort()  # RST, not a polite FIN: the peer sees a dropped link
            self._transports.clear()

        self._call(abort_all)
        return done[0] if done else 0

    def refuse(self, on: bool = True) -> None:
        """While on, every new connection is reset as soon as it is accepted."""
        self._refuse = on

    def down(self) -> None:
        """The back end is gone: cut what is open and refuse what comes."""
        self.refuse(True)
        self.cut()

    def heal(self) -> None:
        """No more faults: no latency, bytes flow, new connections are forwarded."""
        self.latency = 0.0
        self._refuse = False
        self.resume()

    @property
    def stalled_readers(self) -> int:
        """How many pumps hold a chunk because of a stall (someone is mid-call)."""
        return self._stalled_readers

    def wait_for_stalled_traffic(self, timeout: float = 10.0) -> bool:
        """Wait until some bytes are held by a stall: the client is blocked mid-call."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stalled_readers > 0:
                return True
            time.sleep(0.02)
        return False

    # --- internals ---------------------------------------------------------------------

    def _require_flowing(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _call(self, fn: object) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"fault proxy {self.name} is not running")

        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            self._flowing = asyncio.Event()
            self._flowing.set()
            self._server = await asyncio.start_server(self._handle, sock=sock)
            self._ready.set()
            await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())
        loop.close()

    async def _shutdown(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refuse:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._transports.update((writer.transport, up_writer.transport))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._transports.discard(w.transport)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flowing = self._require_flowing()
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if not flowing.is_set():
                    self._stalled_readers += 1
                    try:
                        await flowing.wait()
                    finally:
                        self._stalled_readers -= 1
                if self.latency:
                    await asyncio.sleep(self.latency)
                if writer.transport.is_closing():
                    break
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # Half-close towards the other side so a clean EOF stays a clean EOF.
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof() and not writer.transport.is_closing():
                    writer.write_eof()
