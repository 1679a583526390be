"""A stand-in for the user's own Ollama, for the tests of OVEMBED_UPSTREAM: a small Starlette app on a real
loopback socket that answers what Ollama answers for chat, generation, lists, show, pull, blobs and one
embedding model of its own, and notes every request that reaches it.

Its streams hold after their first chunk until the test opens `gate`, so a test sees whether the first chunk
came through ovembed before the upstream finished; a model named `crash` breaks its stream after one chunk,
as an upstream killed mid-answer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port, wait_for

VERSION = "0.13.5"
CREATED = "2026-11-30T09:15:00.123456789+01:00"
# Its own models: a chat model, and a name ovembed also has (ovembed's entry must stand).
TAGS = [
    {
        "name": "llama3.2:latest",
        "model": "llama3.2:latest",
        "modified_at": CREATED,
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
        "capabilities": ["completion", "tools"],
    },
    {
        "name": "tiny:latest",
        "model": "tiny:latest",
        "modified_at": "2020-01-01T00:00:00Z",
        "size": 1,
        "digest": "0" * 64,
        "details": {"format": "gguf", "family": "bert"},
    },
]
PS = [{**TAGS[0], "expires_at": "2026-12-04T23:59:00.5+00:00", "size_vram": 0, "context_length": 4096}]
GREETING = ["Hel", "lo", "!"]


@dataclass
class StandInOllama:
    """What reached the stand-in, and the gate its streams wait at after their first chunk."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    uploaded: int = 0

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.seen]

    async def _note(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        self.seen.append((request.method, request.url.path, dict(request.headers), body))
        return orjson.loads(body) if body else {}

    async def _stream(self, model: str, chunks: list[bytes], last: bytes) -> AsyncIterator[bytes]:
        yield chunks[0]
        if model == "crash":
            raise RuntimeError("the stand-in breaks off its answer, as a killed upstream does")
        await asyncio.to_thread(self.gate.wait, 60)
        for chunk in chunks[1:]:
            yield chunk
        yield last

    async def generate(self, request: Request) -> Response:
        body = await self._note(request)
        model = body.get("model", "")
        if body.get("stream") is False:
            return JSONResponse({"model": model, "created_at": CREATED, "response": "".join(GREETING), "done": True})
        chunks = [_line({"model": model, "created_at": CREATED, "response": p, "done": False}) for p in GREETING]
        last = _line({"model": model, "created_at": CREATED, "response": "", "done": True, "done_reason": "stop"})
        return StreamingResponse(self._stream(model, chunks, last), media_type="application/x-ndjson")

    async def chat(self, request: Request) -> Response:
        body = await self._note(request)
        model = body.get("model", "")

        def said(text: str, done: bool) -> dict[str, Any]:
            message = {"role": "assistant", "content": text}
            return {"model": model, "created_at": CREATED, "message": message, "done": done}

        if body.get("stream") is False:
            return JSONResponse({**said("".join(GREETING), True), "done_reason": "stop"})
        chunks = [_line(said(p, False)) for p in GREETING]
        last = _line({**said("", True), "done_reason": "stop"})
        return StreamingResponse(self._stream(model, chunks, last), media_type="application/x-ndjson")

    async def chat_completions(self, request: Request) -> Response:
        body = await self._note(request)
        model = body.get("model", "")

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
            return b"data: " + orjson.dumps({**event, "choices": [choice]}) + b"\n\n"

        if not body.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(GREETING)},
                "finish_reason": "stop",
            }
            return JSONResponse(
                {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model, "choices": [choice]}
            )
        chunks = [chunk({"role": "assistant", "content": p}, None) for p in GREETING]
        last = chunk({}, "stop") + b"data: [DONE]\n\n"
        return StreamingResponse(self._stream(model, chunks, last), media_type="text/event-stream")

    async def listed(self, request: Request) -> Response:
        await self._note(request)
        return JSONResponse({"models": PS if request.url.path == "/api/ps" else TAGS})

    async def openai_models(self, request: Request) -> Response:
        await self._note(request)
        data = [{"id": m["name"], "object": "model", "created": 1764490500, "owned_by": "library"} for m in TAGS]
        return JSONResponse({"object": "list", "data": data})

    async def version(self, request: Request) -> Response:
        await self._note(request)
        return JSONResponse({"version": VERSION})

    async def show(self, request: Request) -> Response:
        body = await self._note(request)
        if body.get("model") != "llama3.2":
            return JSONResponse({"error": f"model '{body.get('model')}' not found"}, status_code=404)
        return JSONResponse(
            {"modelfile": "FROM llama3.2", "details": TAGS[0]["details"], "capabilities": ["completion"]}
        )

    async def embed(self, request: Request) -> Response:
        body = await self._note(request)
        texts = body.get("input") or []
        count = 1 if isinstance(texts, str) else len(texts)
        return JSONResponse({"model": body.get("model"), "embeddings": [[0.6, 0.8]] * count})

    async def pull(self, request: Request) -> Response:
        body = await self._note(request)
        if body.get("stream") is False:
            return JSONResponse({"status": "success"})
        lines = [_line({"status": "pulling manifest"}), _line({"status": "success"})]
        return StreamingResponse(iter(lines), media_type="application/x-ndjson")

    async def blob(self, request: Request) -> Response:
        self.seen.append((request.method, request.url.path, dict(request.headers), b""))
        async for chunk in request.stream():
            self.uploaded += len(chunk)
        return Response(status_code=201)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/generate", self.generate, methods=["POST"]),
                Route("/api/chat", self.chat, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/api/tags", self.listed, methods=["GET"]),
                Route("/api/ps", self.listed, methods=["GET"]),
                Route("/v1/models", self.openai_models, methods=["GET"]),
                Route("/api/version", self.version, methods=["GET"]),
                Route("/api/show", self.show, methods=["POST"]),
                Route("/api/embed", self.embed, methods=["POST"]),
                Route("/api/pull", self.pull, methods=["POST"]),
                Route("/api/blobs/{digest}", self.blob, methods=["POST"]),
            ]
        )


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


@contextlib.contextmanager
def running_stand_in(stand_in: StandInOllama) -> Iterator[str]:
    """The stand-in served on a loopback port of its own, on a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(stand_in.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), "the stand-in Ollama to start")
    assert server.started, "the stand-in Ollama did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stand_in.gate.set()
        server.should_exit = True
        thread.join(timeout=30)
