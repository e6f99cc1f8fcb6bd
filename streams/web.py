"""The worker's HTTP API: an aiohttp server started and stopped with the Faust app.

Routes come from the stages that serve them (agents/segments.py: merchant audience segments),
so this module knows nothing of them. A port already taken is logged and the worker screens on
without its API: the hot path never depends on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from mode import Service

log = logging.getLogger(__name__)


class WebApi(Service):
    """Serves `routes` on host:port (port 0: a free one, printed once bound)."""

    def __init__(self, host: str, port: int, routes: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host, self.port, self.routes = host, port, list(routes)
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        api = web.Application()
        api.add_routes(self.routes)
        runner = web.AppRunner(api, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            log.error("HTTP API not started on %s:%d: %s", self.host, self.port, exc)
            await runner.cleanup()
            return
        self._runner = runner
        server = site._server  # the bound socket tells the port 0 became
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        print(f"shinsa worker: API on http://{self.host}:{self.port}/segments", flush=True)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
