"""Ollama's DNS-rebinding guard and CORS rules, in process against the app of each setting.

httpx sends an explicit `Host` header as given, so a request can claim any host; the app reads it as it would
from a socket. Settings come from the environment as `ovembed serve` reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from daemon.config import Settings
from tests.conftest import IN_PROCESS_URL, InProcess, serving


def get(client: TestClient, path: str = "/", **headers: str) -> httpx.Response:
    return client.get(path, headers=headers)


def port_of(client: TestClient) -> int:
    assert client.base_url.port is not None
    return client.base_url.port


@pytest.fixture(scope="module")
def client(app: InProcess) -> TestClient:
    """The shared app, listening (as far as it knows) on loopback."""
    return app.client


def from_env(**env: str) -> dict[str, Any]:
    """The guard's settings as `ovembed serve` reads them from this environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings.from_env()
    return {"listen": settings.listen, "extra_origins": settings.extra_origins}


def assert_forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


# The Host header, on an app that listens on loopback


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:11434", "example.com", "8.8.8.8"])
def test_foreign_host_is_refused(client: TestClient, host: str) -> None:
    assert_forbidden(get(client, Host=host))


def test_foreign_host_is_refused_on_api_routes(client: TestClient) -> None:
    response = client.post("/api/embed", json={"model": "tiny", "input": "hello"}, headers={"Host": "evil.example.com"})
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
def test_local_host_is_allowed(client: TestClient, host: str) -> None:
    response = get(client, Host=host.format(port=port_of(client)))
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
def test_allowed_origin_is_echoed(client: TestClient, origin: str) -> None:
    response = get(client, "/api/version", Origin=origin)
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
def test_foreign_origin_is_refused(client: TestClient, origin: str) -> None:
    assert_forbidden(get(client, Origin=origin))


def test_same_origin_request_gets_no_cors_headers(client: TestClient) -> None:
    response = get(client, Origin=IN_PROCESS_URL)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def assert_preflight_answered(client: TestClient, origin: str = "http://localhost:3000") -> None:
    """A browser's preflight from an allowed origin, answered with every method and header clients send."""
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


def test_preflight_from_allowed_origin(client: TestClient) -> None:
    assert_preflight_answered(client)


def test_preflight_from_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.options(
        "/api/embed", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert_forbidden(response)


def test_cross_origin_embed_works(client: TestClient) -> None:
    origin = "app://obsidian.md"
    response = client.post("/api/embed", json={"model": "tiny", "input": "hello"}, headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"][0]) == 16
    assert response.headers["access-control-allow-origin"] == origin


# Apps whose environment differs


@pytest.fixture(scope="module")
def my_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with serving(tmp_path_factory.mktemp("origins-my-app"), **from_env(OLLAMA_ORIGINS="https://my.app")) as client:
        yield client


def test_ollama_origins_adds_an_origin(my_app: TestClient) -> None:
    response = get(my_app, Origin="https://my.app")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://my.app"
    # The defaults stay, and OLLAMA_ORIGINS added that one origin only.
    assert get(my_app, Origin="http://localhost:3000").status_code == 200
    assert_forbidden(get(my_app, Origin="https://other.app"))
    assert_forbidden(get(my_app, Origin="http://my.app"))
    assert_forbidden(get(my_app, Origin="https://my.app.evil.com"))


def test_ollama_origins_star_allows_any(tmp_path: Path) -> None:
    with serving(tmp_path, **from_env(OLLAMA_ORIGINS="*")) as running:
        for origin in ("https://evil.example.com", "http://localhost.evil.com", "null"):
            response = get(running, Origin=origin)
            assert response.status_code == 200, origin
            assert response.headers["access-control-allow-origin"] == origin
        # Allowing every origin does not switch off the Host check.
        assert_forbidden(get(running, Host="evil.example.com", Origin="https://evil.example.com"))


def test_non_loopback_bind_does_not_check_host(tmp_path: Path) -> None:
    with serving(tmp_path, **from_env(OLLAMA_HOST="0.0.0.0:11434")) as running:
        response = get(running, Host="evil.example.com")
        assert response.status_code == 200
        assert response.text == "Ollama is running"
        # Origins are still checked.
        assert_forbidden(get(running, Origin="https://evil.example.com"))
        assert get(running, Origin="http://localhost:3000").status_code == 200
