"""A small real application for the pass-through tests: `python -m tests.support.upstream_app --port N`.

It runs in its own process (aiohttp, handler cancellation on, so that it sees a dropped connection
at once) and tells the tests what it saw over its own HTTP endpoints, so no test sleeps:

- `* /echo/...`: JSON of the method, the raw target, the header pairs and the body's length and SHA-256.
- `GET /big/{n}`: n deterministic bytes (`tests.helpers.payload(n, seed=7)`), 1 MiB writes, with a length.
- `GET /stream/{token}`: a chunked event stream: `one`, then `two` once `POST /release/{token}`.
- `GET /cookies`, `/gzip`, `/status/{code}`, `/redirect`, `/head-length`: fixed answers.
- `GET /hop-response`: an answer carrying hop-by-hop fields. `POST /slow-upload/{token}`: reads the
  body (`GET /receiving/{token}` waits for its first bytes), then says `released` as `/hold` does.
- `GET /hold/{token}`: headers and 5 bytes, then nothing until the connection goes; then
  `GET /released/{token}` (which waits for it) answers. `GET /hang`: no answer at all.
- `GET /cut`: announces 1000 bytes, sends 100, then drops the connection.
- `POST /drop-after-read/{token}`: reads the request, then drops the connection without an answer;
  `GET /seen/{token}` says how many such requests arrived.
- `GET /ws`: websocket echo (text, binary); `close:<code>` makes it close with that code, and
  `GET /ws-closed/{token}` waits for and returns the close code a client sent on `/ws?token=`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import random
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from aiohttp import WSMsgType, web

from devtools.azurite import ROOT, free_port

MIB: Final = 1024 * 1024
GZIPPED: Final = gzip.compress(b"hello, compressed world\n" * 100, mtime=0)


class State:
    def __init__(self) -> None:
        self.events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.values: dict[str, str] = {}


STATE = web.AppKey("state", State)


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    body = {
        "method": request.method,
        "target": request.raw_path,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_bytes": size,
        "body_sha256": digest.hexdigest(),
        "peer_port": request.transport.get_extra_info("peername")[1] if request.transport else None,
    }
    return web.json_response(body)


async def big(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["n"])
    data = random.Random(7).randbytes(size)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    view = memoryview(data)
    for start in range(0, size, MIB):
        await response.write(view[start : start + MIB])
    await response.write_eof()
    return response


async def stream(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    await response.write(b"data: one\n\n")
    await request.app[STATE].events[f"release:{token}"].wait()
    await response.write(b"data: two\n\n")
    await response.write_eof()
    return response


async def release(request: web.Request) -> web.Response:
    request.app[STATE].events[f"release:{request.match_info['token']}"].set()
    return web.Response(text="released\n")


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies\n")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("X-Repeated", "first")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    response.headers.add("X-Repeated", "second")
    return response


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(body=GZIPPED, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, headers={"ETag": '"v1"', "X-Status": str(code)})


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "http://app.internal:8000/next?x=1"})


async def head_length(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 1234)


async def hop_response(request: web.Request) -> web.Response:
    headers = {
        "Connection": "X-App-Hop",
        "X-App-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authenticate": "Basic",
        "X-End": "kept",
    }
    return web.Response(text="hop\n", headers=headers)


async def slow_upload(request: web.Request) -> web.Response:
    """Reads the body until it ends; tells `/released/{token}` when its connection went away."""
    token = request.match_info["token"]
    try:
        async for _ in request.content.iter_any():
            request.app[STATE].events[f"receiving:{token}"].set()
    finally:
        request.app[STATE].events[f"released:{token}"].set()
    return web.Response(text="done\n")


async def receiving(request: web.Request) -> web.Response:
    await request.app[STATE].events[f"receiving:{request.match_info['token']}"].wait()
    return web.Response(text="receiving\n")


async def hold(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    token = request.match_info["token"]
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"held!")
    try:
        await asyncio.Event().wait()  # until the proxy lets the connection go (handler cancelled)
    finally:
        state.events[f"released:{token}"].set()
    return response  # pragma: no cover


async def released(request: web.Request) -> web.Response:
    await request.app[STATE].events[f"released:{request.match_info['token']}"].wait()
    return web.Response(text="released\n")


async def hang(request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    return web.Response()  # pragma: no cover


async def cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"c" * 100)
    assert request.transport is not None
    request.transport.abort()
    return response


async def drop_after_read(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    key = f"seen:{request.match_info['token']}"
    await request.read()
    state.values[key] = str(int(state.values.get(key, "0")) + 1)
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


async def seen(request: web.Request) -> web.Response:
    return web.Response(text=request.app[STATE].values.get(f"seen:{request.match_info['token']}", "0"))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    token = request.query.get("token", "")
    ws = web.WebSocketResponse(protocols=("chat",), autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await ws.close(code=int(msg.data.partition(":")[2]), message=b"app says bye")
                break
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    state.values[f"close:{token}"] = str(ws.close_code)
    state.events[f"ws-closed:{token}"].set()
    return ws


async def ws_closed(request: web.Request) -> web.Response:
    state = request.app[STATE]
    token = request.match_info["token"]
    await state.events[f"ws-closed:{token}"].wait()
    return web.Response(text=state.values[f"close:{token}"])


def build() -> web.Application:
    app = web.Application(client_max_size=1024 * MIB)
    app[STATE] = State()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/big/{n}", big)
    app.router.add_get("/stream/{token}", stream)
    app.router.add_post("/release/{token}", release)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/head-length", head_length)
    app.router.add_get("/hop-response", hop_response)
    app.router.add_post("/slow-upload/{token}", slow_upload)
    app.router.add_get("/receiving/{token}", receiving)
    app.router.add_get("/hold/{token}", hold)
    app.router.add_get("/released/{token}", released)
    app.router.add_get("/hang", hang)
    app.router.add_get("/cut", cut)
    app.router.add_post("/drop-after-read/{token}", drop_after_read)
    app.router.add_get("/seen/{token}", seen)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/ws-closed/{token}", ws_closed)
    # Paths that clash with ours: only reachable when imgproxy's ops routes are moved.
    app.router.add_get("/healthz", own_healthz)
    app.router.add_get("/admin/cache", own_admin)
    return app


async def own_healthz(request: web.Request) -> web.Response:
    return web.Response(text="app healthz\n")


async def own_admin(request: web.Request) -> web.Response:
    return web.Response(text="app admin\n")


async def serve(port: int) -> None:
    runner = web.AppRunner(build(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"upstream app on {port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


@dataclass(frozen=True, slots=True)
class UpstreamApp:
    """This application, in its own process (`run_upstream_app`)."""

    url: str
    proc: subprocess.Popen[str]


@contextlib.contextmanager
def run_upstream_app() -> Iterator[UpstreamApp]:
    """Start `python -m tests.support.upstream_app` on a free loopback port; stop it on exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream_app", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens
        assert line.startswith("upstream app on"), line
        yield UpstreamApp(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
