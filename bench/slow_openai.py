"""The fake OpenAI API made slow: a fixed latency per image and speech request, optionally one request at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import FakeOpenAI


class SlowOpenAI(FakeOpenAI):
    """Answers like FakeOpenAI after `latency_seconds`. `concurrency` > 0 serves that many requests at a time (the
    rest queue), like a model server with one GPU: the bottleneck a second replica with its own server removes."""

    def __init__(self, latency_seconds: float, concurrency: int = 0) -> None:
        super().__init__()
        self.latency_seconds = latency_seconds
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None

    async def _slow(self) -> None:
        if not self.concurrency:
            await asyncio.sleep(self.latency_seconds)
            return
        if self._slots is None:  # made on the server's own loop
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            await asyncio.sleep(self.latency_seconds)

    async def _images(self, body: dict[str, Any]) -> web.Response:
        await self._slow()
        return await super()._images(body)

    async def _speech(self, body: dict[str, Any]) -> web.Response:
        await self._slow()
        return await super()._speech(body)
