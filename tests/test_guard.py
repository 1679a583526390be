"""Ollama's DNS-rebinding guard and CORS rules, over real sockets to real daemons.

httpx sends an explicit `Host` header as given, so a request can claim any host while connecting to loopback.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    OVEMBED,
    REPO,
    Daemon,
    daemon_env,
    free_port,
    start_daemon,
    stop_daemon,
    wait_until_up,
)


def get(daemon: Daemon, path: str = "/", **headers: str) -> httpx.Response:
    with daemon.client() as client:
        return client.get(path, headers=headers)


def port_of(daemon: Daemon) -> int:
    return int(daemon.url.rsplit(":", 1)[1])


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


# The Host header, on a loopback daemon


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:11434", "example.com", "8.8.8.8"])
def test_foreign_host_is_refused(daemon: Daemon, host: str) -> None:
    assert_forbidden(get(daemon, Host=host))


def test_foreign_host_is_refused_on_api_routes(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.post(
            "/api/embed", json={"model": "tiny", "input": "hello"}, headers={"Host": "evil.example.com"}
        )
    assert_forbidden(response)


@pytest.mark.parametrize(
    "host",
    [
        "localhost:{port}",
        "127.0.0.1:{port}",
        "localhost",
        "myhost.local",
        "foo.internal",
        "app.localhost",
        "192.168.1.5",
        "10.0.0.1:{port}",
        "[::1]:{port}",
        "0.0.0.0:{port}",
    ],
)
def test_local_host_is_allowed(daemon: Daemon, host: str) -> None:
    response = get(daemon, Host=host.format(port=port_of(daemon)))
    assert response.status_code == 200
    assert response.text == "Ollama is running"


# Origins, on the default list


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "http://localhost",
        "https://127.0.0.1:8443",
        "http://0.0.0.0:80",
        "app://obsidian.md",
        "vscode-webview://x",
        "file://",
        "tauri://localhost",
        "vscode-file://vscode-app",
    ],
)
def test_allowed_origin_is_echoed(daemon: Daemon, origin: str) -> None:
    response = get(daemon, "/api/version", Origin=origin)
    assert response.status_code == 200
    assert response.json()["version"]
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers.get_list("vary")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "http://localhost.evil.com",  # stricter than gin's prefix match on "http://localhost"
        "http://127.0.0.1.evil.com",
        "http://localhost:3000.evil.com",
        "null",
    ],
)
def test_foreign_origin_is_refused(daemon: Daemon, origin: str) -> None:
    assert_forbidden(get(daemon, Origin=origin))


def test_same_origin_request_gets_no_cors_headers(daemon: Daemon) -> None:
    response = get(daemon, Origin=daemon.url)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_preflight_from_allowed_origin(daemon: Daemon) -> None:
    origin = "http://localhost:3000"
    with daemon.client() as client:
        response = client.options(
            "/api/embed",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,authorization",
            },
        )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == origin
    methods = {m.strip().upper() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "OPTIONS", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "user-agent", "accept", "x-requested-with", "openai-beta"} <= allowed
    assert any(h.startswith("x-stainless-") for h in allowed)


def test_preflight_from_foreign_origin_is_refused(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.options(
            "/api/embed", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
        )
    assert_forbidden(response)


def test_cross_origin_embed_works(daemon: Daemon) -> None:
    origin = "app://obsidian.md"
    with daemon.client() as client:
        response = client.post("/api/embed", json={"model": "tiny", "input": "hello"}, headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"][0]) == 16
    assert response.headers["access-control-allow-origin"] == origin


# Daemons whose environment differs


@pytest.fixture(scope="module")
def my_app_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    running = start_daemon(tmp_path_factory.mktemp("origins-my-app"), OLLAMA_ORIGINS="https://my.app")
    yield running
    stop_daemon(running)


def test_ollama_origins_adds_an_origin(my_app_daemon: Daemon) -> None:
    response = get(my_app_daemon, Origin="https://my.app")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://my.app"
    # The defaults stay, and OLLAMA_ORIGINS added that one origin only.
    assert get(my_app_daemon, Origin="http://localhost:3000").status_code == 200
    assert_forbidden(get(my_app_daemon, Origin="https://other.app"))
    assert_forbidden(get(my_app_daemon, Origin="http://my.app"))
    assert_forbidden(get(my_app_daemon, Origin="https://my.app.evil.com"))


def test_ollama_origins_star_allows_any(tmp_path: Path) -> None:
    running = start_daemon(tmp_path, OLLAMA_ORIGINS="*")
    try:
        for origin in ("https://evil.example.com", "http://localhost.evil.com", "null"):
            response = get(running, Origin=origin)
            assert response.status_code == 200, origin
            assert response.headers["access-control-allow-origin"] == origin
        # Allowing every origin does not switch off the Host check.
        assert_forbidden(get(running, Host="evil.example.com", Origin="https://evil.example.com"))
    finally:
        stop_daemon(running)


def test_non_loopback_bind_does_not_check_host(tmp_path: Path) -> None:
    port = free_port()
    models = tmp_path / "models"
    models.mkdir()
    env = daemon_env(models, port, OLLAMA_HOST=f"0.0.0.0:{port}")
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*OVEMBED, "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    running = Daemon(url=f"http://127.0.0.1:{port}", models_dir=models, env=env, process=process, log_path=log_path)
    try:
        wait_until_up(running.url, process, log_path)
        response = get(running, Host="evil.example.com")
        assert response.status_code == 200
        assert response.text == "Ollama is running"
        # Origins are still checked.
        assert_forbidden(get(running, Origin="https://evil.example.com"))
        assert get(running, Origin="http://localhost:3000").status_code == 200
    finally:
        stop_daemon(running)
