"""A TCP relay on loopback that delays every byte by a fixed time each way: a slow link."""

from __future__ import annotations

import asyncio
import threading
import time


class DelayProxy:
    """Listens on 127.0.0.1 (an OS-chosen port) and relays each connection to ``target``
    (host, port), holding every chunk ``delay`` seconds in each direction, in order."""

    def __init__(self, target: tuple[str, int], delay: float,
                 back: float | None = None) -> None:
        # (``back``: the delay from ``target`` back to the connecting side, if not ``delay``)
        self.target, self.delay = target, delay
        self.back = delay if back is None else back
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.port = 0

        async def serve() -> None:
            self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        started.wait(10)

    async def _relay(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer, self.delay),
                                 self._pipe(up_reader, writer, self.back))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _pipe(self, reader, writer, delay: float) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(1 << 16):
                queue.put_nowait((time.monotonic() + delay, data))
        except OSError:
            pass
        queue.put_nowait(None)
        await sender

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
