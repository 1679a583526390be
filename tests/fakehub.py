"""A fake Hugging Face Hub for tests: the real ``huggingface_hub`` client talks HTTP to it on loopback.

It speaks only what ``snapshot_download``/``hf_hub_download`` need for model repos (see
``model-catalog.md`` §4): revision info, the tree listing, and ``HEAD``/``GET`` on ``/resolve/``.
It never sends Xet headers, so the client always takes the plain HTTP path. Faults (500s, cut
transfers, throttling) can be switched on while the hub is serving.

Run it as a process for a daemon under test (from the repository root)::

    python -m tests.fakehub --port 0 --repo sentence-transformers/all-MiniLM-L6-v2=/path/to/folder

It prints its URL on the first line of stdout and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

LFS_THRESHOLD = 1024 * 1024
"""Files this big are served as LFS files: sha256 ETag and an ``lfs`` object in the tree."""

_CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class _File:
    source: Path
    size: int
    oid: str  # git blob sha1 of the content, or of the LFS pointer for LFS files
    sha256: str
    pointer_size: int | None  # set for LFS files only

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag, and what the client names the blob after."""
        return self.oid if self.pointer_size is None else self.sha256


@dataclass
class _Repo:
    gated: bool = False
    commits: dict[str, tuple[str, dict[str, _File]]] = field(default_factory=dict)  # rev -> (sha, files)

    def lookup(self, rev: str) -> tuple[str, dict[str, _File]] | None:
        """A revision is a branch name or a commit sha, as on the Hub."""
        return self.commits.get(rev) or next((c for c in self.commits.values() if c[0] == rev), None)


@dataclass
class _Fault:
    pattern: str
    kind: str  # "500", "cut", "slow", "missing" or "corrupt"
    value: float = 0
    times: int | None = None  # None: until clear_faults()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hash_file(path: Path) -> _File:
    size = path.stat().st_size
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    sha256 = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            sha1.update(chunk)
            sha256.update(chunk)
    if size < LFS_THRESHOLD:
        return _File(path, size, sha1.hexdigest(), sha256.hexdigest(), None)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256.hexdigest()}\nsize {size}\n".encode()
    return _File(path, size, _git_sha1(pointer), sha256.hexdigest(), len(pointer))


def _error(status: int, code: str, message: str, commit: str | None = None) -> Response:
    """Errors carry ``X-Error-Code``, which is what the client maps onto its exception classes."""
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _tree_entry(path: str, f: _File) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "path": path, "size": f.size, "oid": f.oid}
    if f.pointer_size is not None:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return entry


async def _read(path: Path, start: int, length: int, bytes_per_second: float | None) -> AsyncIterator[bytes]:
    chunk = _CHUNK if bytes_per_second is None else max(1, min(_CHUNK, int(bytes_per_second / 10)))
    with path.open("rb") as f:
        f.seek(start)
        while length > 0:
            data = f.read(min(chunk, length))
            if not data:  # the folder changed on disk since add_repo(): send what there is
                return
            length -= len(data)
            if bytes_per_second is not None:
                await asyncio.sleep(len(data) / bytes_per_second)
            yield data


async def _changed_first_byte(body: AsyncIterator[bytes], at_start: bool) -> AsyncIterator[bytes]:
    async for chunk in body:
        if at_start and chunk:
            chunk, at_start = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
        yield chunk


class _Body(StreamingResponse):
    """A streamed body that, when ``complete`` is false, stops short of its Content-Length.

    uvicorn then drops the connection ("ASGI callable returned without completing response"), so the
    client sees a broken transfer exactly as on a network cut.
    """

    def __init__(
        self, content: AsyncIterator[bytes], status_code: int, headers: dict[str, str], complete: bool
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.complete = complete

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class FakeHub:
    """Serves folders as Hub model repos; an ASGI app, so uvicorn can run it directly.

    ``requests`` logs every ``(method, path)``; ``ranges`` logs ``(path, Range header)`` of GETs
    that asked for a range, so tests can see a resume. ``token`` opens gated repos.
    """

    def __init__(self, token: str = "hf_fakehub_token") -> None:
        self.token = token
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._app = Starlette(
            routes=[
                Route("/api/models/{org}/{name}/revision/{rev}", self._revision),
                Route("/api/models/{org}/{name}/tree/{rev}", self._tree),
                Route("/{org}/{name}/resolve/{rev}/{path:path}", self._resolve, methods=["GET", "HEAD"]),
            ]
        )

    def add_repo(self, repo_id: str, folder: Path, *, revision: str = "main", gated: bool = False) -> str:
        """Serve every file under ``folder`` as ``repo_id@revision``; returns the commit sha.

        The files are hashed now, so the sha is stable for the same content; do not change the
        folder afterwards.
        """
        files = {p.relative_to(folder).as_posix(): _hash_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        digest = hashlib.sha1(repo_id.encode())
        for path, f in files.items():
            digest.update(f"\n{path}\0{f.etag}".encode())
        sha = digest.hexdigest()
        repo = self._repos.setdefault(repo_id, _Repo())
        repo.gated = gated
        repo.commits[revision] = (sha, files)
        return sha

    def fail_with_500(self, pattern: str, times: int = 1) -> None:
        """Answer 500 to the next ``times`` GETs of files matching ``pattern`` (fnmatch on the repo path)."""
        self._add(_Fault(pattern, "500", times=times))

    def cut_after(self, pattern: str, nbytes: int, times: int = 1) -> None:
        """On the next ``times`` GETs of matching files, send full headers, ``nbytes`` of body, then drop."""
        self._add(_Fault(pattern, "cut", nbytes, times))

    def missing(self, pattern: str) -> None:
        """Answer 404 EntryNotFound to GETs of matching files until ``clear_faults()``, though the tree lists them."""
        self._add(_Fault(pattern, "missing"))

    def corrupt(self, pattern: str) -> None:
        """Send matching files with their first byte changed until ``clear_faults()``: the size is right, the
        hash is not."""
        self._add(_Fault(pattern, "corrupt"))

    def slow(self, pattern: str, bytes_per_second: float) -> None:
        """Throttle GETs of matching files until ``clear_faults()``, so a test can interrupt them."""
        self._add(_Fault(pattern, "slow", bytes_per_second))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def resolve_gets(self) -> list[str]:
        """URL paths of file downloads so far: a pull that fetched nothing leaves this unchanged."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self._app(scope, receive, send)

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, kind: str, path: str) -> _Fault | None:
        """The first active fault of ``kind`` for ``path``, using up one of its ``times``."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.times != 0 and fnmatchcase(path, fault.pattern):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _find(self, request: Request) -> tuple[str, _Repo, str, dict[str, _File]] | Response:
        repo_id = f"{request.path_params['org']}/{request.path_params['name']}"
        repo = self._repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        found = repo.lookup(request.path_params["rev"])
        if found is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {request.path_params['rev']}")
        return (repo_id, repo, *found)

    async def _revision(self, request: Request) -> Response:
        found = self._find(request)
        if isinstance(found, Response):
            return found
        repo_id, repo, sha, files = found
        return JSONResponse(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": False,
                "gated": "manual" if repo.gated else False,  # metadata stays public, as on the Hub
                "siblings": [{"rfilename": path} for path in files],
            }
        )

    async def _tree(self, request: Request) -> Response:
        found = self._find(request)
        if isinstance(found, Response):
            return found
        _, _, _, files = found
        dirs = {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}
        entries = [{"type": "directory", "path": d, "oid": _git_sha1(d.encode()), "size": 0} for d in dirs]
        entries += [_tree_entry(path, f) for path, f in files.items()]
        if request.query_params.get("recursive", "false").lower() != "true":
            entries = [e for e in entries if "/" not in str(e["path"])]
        return JSONResponse(sorted(entries, key=lambda e: str(e["path"])))

    async def _resolve(self, request: Request) -> Response:
        found = self._find(request)
        if isinstance(found, Response):
            return found
        _, repo, sha, files = found
        if repo.gated and request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(403, "GatedRepo", "Access to this gated repo is restricted")
        path = request.path_params["path"]
        f = files.get(path)
        if f is None or self._take("missing", path):
            return _error(404, "EntryNotFound", f"{path} does not exist", commit=sha)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            return Response(headers={**headers, "Content-Length": str(f.size)})
        if self._take("500", path):
            return Response("Internal Error", status_code=500)

        start, end, status = 0, f.size, 200
        if (range_header := request.headers.get("range")) and (m := _RANGE.fullmatch(range_header)):
            self.ranges.append((request.url.path, range_header))
            start, end, status = int(m[1]), min(f.size, int(m[2] or f.size - 1) + 1), 206
            if start >= end:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{f.size}"})
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        headers["Content-Length"] = str(end - start)

        cut = self._take("cut", path)
        slow = self._take("slow", path)
        length = end - start if cut is None else min(end - start, int(cut.value))
        body = _read(f.source, start, length, None if slow is None else slow.value)
        if self._take("corrupt", path):
            body = _changed_first_byte(body, start == 0)
        return _Body(body, status, headers, complete=length == end - start)


def _server(hub: FakeHub) -> uvicorn.Server:
    # A short graceful timeout: a throttled download must not hold up shutdown.
    config = uvicorn.Config(
        hub,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


@contextmanager
def running_hub(hub: FakeHub, port: int = 0) -> Iterator[str]:
    """Serve ``hub`` from a background thread on 127.0.0.1; yields ``http://127.0.0.1:PORT``."""
    with socket.create_server(("127.0.0.1", port)) as sock:
        server = _server(hub)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake hub did not start")
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakehub", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=FOLDER", required=True)
    args = parser.parse_args(argv)
    hub = FakeHub()
    for spec in args.repo:
        repo_id, _, folder = spec.partition("=")
        hub.add_repo(repo_id, Path(folder))
    with socket.create_server(("127.0.0.1", args.port)) as sock:
        print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        _server(hub).run(sockets=[sock])


if __name__ == "__main__":
    main()
