"""aiohttp's test server, serving an app with the server `python -m imgproxy` runs.

`ImgproxyTestServer` is a `TestServer` (so `TestClient` and pytest-aiohttp's `aiohttp_client`
take it) whose runner comes from `imgproxy.server.start_runner`: every connection passes the
front door (`web.frontdoor`), and the lanes (the hot path, then the pass-through) answer ahead of
the router (`web.lanes`). The `app_client` fixture (`tests/conftest.py`) serves its apps with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from imgproxy.server import make_runner

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ImgproxyTestServer(TestServer):
    """`app` served as `imgproxy.server.serve` serves it, on a free loopback port.

    - `handler_cancellation` is off unless asked for, as in production (a client that goes away
      does not cancel its handler: the response's writes fail instead). aiohttp's own TestServer
      turns it on.
    - The access log and the shutdown timeout come from the app's config, as in `serve`.
    - `ssl`: serve TLS with this context.
    - `runner_kwargs` go to `make_runner` (aiohttp's `AppRunner`) and win over the above.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        ssl: SSLContext | None = None,
        handler_cancellation: bool = False,
        **runner_kwargs: Any,
    ) -> None:
        super().__init__(app)
        self._tls = ssl
        self._runner_kwargs: dict[str, Any] = {"handler_cancellation": handler_cancellation, **runner_kwargs}

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self._tls is not None:
            kwargs.setdefault("ssl", self._tls)
        await super().start_server(loop=loop, **kwargs)

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        # aiohttp's start_server asks for handler_cancellation=True; ours (production's) wins.
        return make_runner(self.app, **{**kwargs, **self._runner_kwargs})


def record_routed(app: web.Application, into: list[str]) -> None:
    """Append "METHOD path?query" to `into` for each request that reaches `app`'s router: past the
    lanes (the hot path answers the others, the pass-through lane forwards what is not ours).
    Call before the app is served."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        into.append(f"{request.method} {request.path_qs}")
        return await handler(request)

    app.middlewares.insert(0, record)  # the outermost: before the app's own middlewares
