"""The API key (OVEMBED_API_KEY, OVEMBED_API_KEY_FILE): in process against the app of each setting, with the real
client libraries through AppTransport, and over a socket for the CLI, scripts/provision and Chroma, which builds
its own ollama client from a URL."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from starlette.testclient import TestClient

from daemon.config import ConfigError, Settings
from daemon.http.auth import OPEN_ROUTES
from tests.conftest import (
    IN_PROCESS_URL,
    OVEMBED,
    REPO,
    AppTransport,
    Daemon,
    InProcess,
    scrape_text,
    serving,
    start_daemon,
    stop_daemon,
    store_models,
    wait_for,
)
from tests.contract import NATIVE_JSON
from tests.test_guard import assert_preflight_answered

KEY = "k3y_for-the-tests_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
BEARER = {"Authorization": f"Bearer {KEY}"}
REFUSED = (
    'unauthorized: send "Authorization: Bearer <key>" with the key the daemon has in OVEMBED_API_KEY '
    "(or OVEMBED_API_KEY_FILE)"
)
# What may be asked without the key; everything else in the route table wants it.
OPEN = {(method, path) for path in ("/", "/api/version", "/health") for method in ("GET", "HEAD")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("auth")
    store_models(root, {"tiny": tiny_dir})
    return root


@pytest.fixture(scope="module")
def keyed(root: Path) -> Iterator[TestClient]:
    """The app with a key, its 500s answered rather than raised (no route may answer one here anyway)."""
    with serving(root, api_key=KEY, raise_server_exceptions=False) as client:
        yield client


def assert_refused(response: httpx.Response, *sent: str) -> None:
    """A 401 in Ollama's shape that says what to do, and echoes neither the key nor what was sent."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == NATIVE_JSON
    assert response.json() == {"error": REFUSED}
    for secret in (KEY, *sent):
        assert secret not in response.text and secret not in str(response.headers)


def requests_of(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) of the app's route table, path parameters filled in."""
    found = []
    for route in app.routes:
        path = re.sub(r"\{[^}]+\}", "tiny", route.path)
        found += [(method, path) for method in sorted(route.methods)]
    return found


# Which routes want the key


def test_every_route_in_the_table_wants_the_key_but_the_open_ones(keyed: TestClient) -> None:
    """Read from the app's own routes, so a route added later is behind the key unless named open."""
    requests = requests_of(keyed.app)
    assert len(requests) >= 20 and ("GET", "/v1/models/tiny") in requests
    assert {(method, path) for method, path in requests if (method, path) in OPEN_ROUTES} == OPEN == OPEN_ROUTES
    for method, path in requests:
        without = keyed.request(method, path)
        with_key = keyed.request(method, path, headers=BEARER)
        if (method, path) in OPEN:
            assert without.status_code == 200, (method, path, without.text)
        else:
            assert without.status_code == 401, (method, path, without.text)
            assert without.headers["www-authenticate"] == "Bearer"
        assert with_key.status_code not in (401, 403) and with_key.status_code < 500, (method, path, with_key.text)


def test_with_the_key_the_api_answers_as_without_one(keyed: TestClient) -> None:
    answer = keyed.post("/api/embed", json={"model": "tiny", "input": ["water", "fire"]}, headers=BEARER)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["embeddings"]) == 2
    assert "www-authenticate" not in answer.headers
    # A path nobody serves is behind the key too; with it, Gin's 404 as before.
    assert keyed.get("/no/such/path").status_code == 401
    assert keyed.get("/no/such/path", headers=BEARER).text == "404 page not found"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-key",
        "Bearer ",
        "Bearer",
        f"Bearer {KEY[:-1]}X",  # differs in the last character only
        f"Bearer {KEY}X",
        f"Bearer {KEY[:-1]}",
        f"Basic {base64.b64encode(f'user:{KEY}'.encode()).decode()}",
        f"Basic {KEY}",
        f"Token {KEY}",
        KEY,
        "",
    ],
    ids=[
        "wrong",
        "empty",
        "bare-scheme",
        "last-char",
        "longer",
        "shorter",
        "basic",
        "basic-raw",
        "token",
        "no-scheme",
        "blank",
    ],
)
def test_anything_but_the_key_as_a_bearer_token_is_refused(keyed: TestClient, authorization: str) -> None:
    response = keyed.post(
        "/api/embed", json={"model": "tiny", "input": "water"}, headers={"Authorization": authorization}
    )
    token = authorization.partition(" ")[2].strip()
    assert_refused(response, *([token] if token else []))


def test_the_scheme_is_case_insensitive_and_spaces_around_the_token_do_not_count(keyed: TestClient) -> None:
    for authorization in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY} "):
        response = keyed.get("/api/tags", headers={"Authorization": authorization})
        assert response.status_code == 200, authorization


def test_only_the_first_authorization_header_counts(keyed: TestClient) -> None:
    first_wrong = [("Authorization", "Bearer wrong"), ("Authorization", f"Bearer {KEY}")]
    assert keyed.get("/api/tags", headers=first_wrong).status_code == 401
    first_right = [("Authorization", f"Bearer {KEY}"), ("Authorization", "Bearer wrong")]
    assert keyed.get("/api/tags", headers=first_right).status_code == 200


# The refusal in each API family's words


def test_the_refusal_is_each_apis_own_error_shape(keyed: TestClient) -> None:
    ollama_style = keyed.post("/api/embed", json={"model": "tiny", "input": "x"})
    assert_refused(ollama_style)
    for path in ("/v1/embeddings", "/v1/models"):
        response = keyed.request("POST" if path == "/v1/embeddings" else "GET", path)
        assert (response.status_code, response.headers["content-type"]) == (401, "application/json")
        assert response.json() == {"error": {"message": REFUSED, "type": "api_error", "param": None, "code": None}}
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/rerank", "/v2/rerank"):  # Cohere's, which Jina's clients read too
        response = keyed.post(path, json={"query": "q", "documents": ["a"]})
        assert (response.status_code, response.json()) == (401, {"message": REFUSED})
    for path in ("/rerank", "/embed_sparse"):  # TEI's
        response = keyed.post(path, json={"query": "q", "texts": ["a"], "inputs": "a"})
        assert (response.status_code, response.json()) == (401, {"error": REFUSED, "error_type": "validation"})


# What the guard does first


def test_a_preflight_is_answered_without_the_key_and_a_refusal_reaches_the_browser(keyed: TestClient) -> None:
    origin = "http://localhost:3000"
    assert_preflight_answered(keyed, origin)  # a browser sends no credentials in a preflight
    refused = keyed.post("/api/embed", json={"model": "tiny", "input": "x"}, headers={"Origin": origin})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == origin  # so the page can read why
    allowed = keyed.post("/api/embed", json={"model": "tiny", "input": "x"}, headers={"Origin": origin, **BEARER})
    assert allowed.status_code == 200


def test_a_foreign_host_or_origin_is_refused_by_the_guard_first_key_or_not(keyed: TestClient) -> None:
    for headers in (
        {"Host": "evil.example.com"},
        {"Host": "evil.example.com", **BEARER},
        {"Origin": "https://evil.example.com", **BEARER},
    ):
        response = keyed.get("/api/tags", headers=headers)
        assert (response.status_code, response.content) == (403, b"")


# Without a key


def test_without_a_key_any_authorization_header_is_ignored(app: InProcess) -> None:
    """Open WebUI sends an empty `Bearer ` when no key is configured; the OpenAI SDK always sends one."""
    for authorization in ("Bearer whatever", "Bearer ", "Basic dXNlcjpwYXNz", "garbage"):
        headers = {"Authorization": authorization}
        assert app.client.get("/api/tags", headers=headers).status_code == 200
        embedded = app.client.post("/api/embed", json={"model": "tiny", "input": "water"}, headers=headers)
        assert embedded.status_code == 200, embedded.text
        assert "www-authenticate" not in embedded.headers


# /metrics, the access line, and the key kept out of both


def test_refusals_are_counted_and_logged_and_neither_shows_the_key(
    keyed: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def refusals() -> float:
        scraped = scrape_text(keyed.get("/metrics", headers=BEARER).text)
        return scraped.get(("ovembed_requests_total", (("route", "/api/embed"), ("status", "401"))), 0.0)

    before = refusals()
    with caplog.at_level(logging.DEBUG):
        keyed.post(
            "/api/embed", json={"model": "tiny", "input": "x"}, headers={"Authorization": "Bearer not-the-key-42"}
        )
        keyed.post("/api/embed", json={"model": "tiny", "input": "x"}, headers=BEARER)
    assert refusals() == before + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "ovembed.access"]
    assert any(re.fullmatch(r"POST /api/embed 401 [\d.]+ ms", line) for line in lines), lines
    assert any(line.startswith("POST /api/embed 200 ") for line in lines), lines
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert KEY not in logged and "not-the-key-42" not in logged
    assert KEY not in keyed.get("/metrics", headers=BEARER).text


def test_metrics_want_the_key_unless_opened_for_a_scraper(keyed: TestClient, root: Path) -> None:
    assert keyed.get("/metrics").status_code == 401
    with serving(root, api_key=KEY, metrics_open=True) as opened:
        scraped = opened.get("/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert opened.get("/api/tags").status_code == 401  # only /metrics opens
        assert opened.post("/metrics").status_code == 401  # and only its GET


# The settings


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("OVEMBED_API_KEY", "OVEMBED_API_KEY_FILE", "OVEMBED_METRICS_OPEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_the_key_comes_from_the_variable_or_the_file_and_never_shows_in_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert settings_from(monkeypatch).api_key is None
    assert settings_from(monkeypatch, OVEMBED_API_KEY="").api_key is None
    assert settings_from(monkeypatch, OVEMBED_API_KEY=KEY).api_key == KEY
    key_file = tmp_path / "api-key"
    key_file.write_text(f"  {KEY}\n\n")
    settings = settings_from(monkeypatch, OVEMBED_API_KEY_FILE=str(key_file), OVEMBED_METRICS_OPEN="1")
    assert (settings.api_key, settings.metrics_open) == (KEY, True)
    assert settings_from(monkeypatch, OVEMBED_METRICS_OPEN="0").metrics_open is False
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert "api_key" not in repr(settings)


def test_a_key_read_from_a_file_is_the_one_the_app_wants(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("from-a-file\n")
    settings = settings_from(monkeypatch, OVEMBED_API_KEY_FILE=str(key_file))
    with serving(tmp_path, api_key=settings.api_key) as client:
        assert client.get("/api/tags", headers={"Authorization": "Bearer from-a-file"}).status_code == 200
        assert client.get("/api/tags", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OVEMBED_API_KEY": KEY, "OVEMBED_API_KEY_FILE": "{dir}/api-key"},
            "OVEMBED_API_KEY and OVEMBED_API_KEY_FILE are both set: set only one of them",
        ),
        (
            {"OVEMBED_API_KEY_FILE": "{dir}/missing"},
            "cannot read the API key from OVEMBED_API_KEY_FILE={dir}/missing: No such file or directory",
        ),
        ({"OVEMBED_API_KEY_FILE": "{dir}"}, "cannot read the API key from OVEMBED_API_KEY_FILE={dir}: Is a directory"),
        (
            {"OVEMBED_API_KEY_FILE": "{dir}/empty"},
            "OVEMBED_API_KEY_FILE={dir}/empty is empty: write the key in it, or unset the variable",
        ),
    ],
    ids=["both", "missing", "directory", "empty"],
)
def test_a_key_setting_that_cannot_be_used_stops_the_daemon_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "api-key").write_text(KEY)
    (tmp_path / "empty").write_text(" \n")
    env = {name: value.format(dir=tmp_path) for name, value in env.items()}
    message = message.format(dir=tmp_path)
    with pytest.raises(ConfigError) as refused:
        settings_from(monkeypatch, **env)
    assert str(refused.value) == message
    served = subprocess.run(
        [*OVEMBED, "serve"],
        env={**os.environ, "OLLAMA_HOST": "127.0.0.1:9", "OVEMBED_MODELS": str(tmp_path / "models"), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (served.returncode, served.stdout, served.stderr) == (1, "", f"Error: {message}\n")
    assert not (tmp_path / "models").exists()


# Real clients, in process


def test_ollama_python_sends_the_key_in_its_headers(keyed: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    transport = AppTransport(keyed)
    client = ollama.Client(host=IN_PROCESS_URL, headers=BEARER, transport=transport)
    assert len(client.embed(model="tiny", input=["water", "fire"]).embeddings) == 2
    assert "tiny:latest" in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=IN_PROCESS_URL, transport=transport).embed(model="tiny", input="water")
    assert (refused.value.status_code, refused.value.error) == (401, REFUSED)
    # ollama-python sends OLLAMA_API_KEY from its environment by itself, as Chroma's client relies on.
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    client = ollama.Client(host=IN_PROCESS_URL, transport=transport)
    assert len(client.embed(model="tiny", input="water").embeddings) == 1


def test_the_openai_sdk_sends_the_key_as_its_api_key(keyed: TestClient) -> None:
    http = httpx.Client(transport=AppTransport(keyed))
    with openai.OpenAI(base_url=IN_PROCESS_URL + "/v1", api_key=KEY, max_retries=0, http_client=http) as sdk:
        embedded = sdk.embeddings.create(model="tiny", input=["water", "fire"])
        assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 16
        assert "tiny:latest" in [m.id for m in sdk.models.list()]
    http = httpx.Client(transport=AppTransport(keyed))
    sdk = openai.OpenAI(base_url=IN_PROCESS_URL + "/v1", api_key="ollama", max_retries=0, http_client=http)
    with sdk, pytest.raises(openai.AuthenticationError) as refused:
        sdk.embeddings.create(model="tiny", input="water")
    assert refused.value.status_code == 401
    assert REFUSED in refused.value.message


# Over a socket: the CLI, scripts/provision, Chroma


@pytest.fixture(scope="module")
def keyed_daemon(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("keyed-daemon")
    store_models(root, {"tiny": tiny_dir})
    running = start_daemon(root, OVEMBED_PRECISION="fp32", OVEMBED_API_KEY=KEY)
    yield running
    stop_daemon(running)


def without_key(daemon: Daemon, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in daemon.env.items() if not name.startswith("OVEMBED_API_KEY")}
    return {**env, **extra}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_cli_sends_the_key_from_its_environment(keyed_daemon: Daemon, tmp_path: Path) -> None:
    assert "tiny:latest" in keyed_daemon.cli("list").stdout  # the daemon's own environment: OVEMBED_API_KEY
    key_file = tmp_path / "api-key"
    key_file.write_text(KEY + "\n")
    from_file = run([*OVEMBED, "embed", "tiny", "water"], without_key(keyed_daemon, OVEMBED_API_KEY_FILE=str(key_file)))
    assert from_file.returncode == 0, from_file.stderr
    assert len(json.loads(from_file.stdout)[0]) == 16


def test_the_cli_without_the_key_prints_the_daemons_401_and_what_it_sent(keyed_daemon: Daemon) -> None:
    for command in (["list"], ["embed", "tiny", "water"], ["pull", "tiny"]):
        refused = run([*OVEMBED, *command], without_key(keyed_daemon))
        assert refused.returncode == 1, command
        said = "this command sends OVEMBED_API_KEY or OVEMBED_API_KEY_FILE from its environment: neither is set"
        assert refused.stderr.endswith(f"Error: {REFUSED}; {said}\n"), refused.stderr
    wrong = run([*OVEMBED, "list"], without_key(keyed_daemon, OVEMBED_API_KEY="not-the-key"))
    assert wrong.returncode == 1
    assert wrong.stderr.endswith(": the key it has was refused\n") and "not-the-key" not in wrong.stderr


def test_provision_sends_the_key_and_without_it_stops_at_once(keyed_daemon: Daemon, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.write_text("# nothing to pull\n")
    provision = [str(REPO / "scripts" / "provision"), "-w", "600", "-f", str(models)]
    command = f"{OVEMBED[0]} {' '.join(OVEMBED[1:])}"
    done = run(provision, {**keyed_daemon.env, "OVEMBED": command})
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "provision: 0 pulled, 0 failed"
    refused = run(provision, without_key(keyed_daemon, OVEMBED=command))  # the -w 600 wait would time the test out
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"provision: {REFUSED}; "), refused.stderr


def test_chromas_ollama_embedding_function_sends_ollama_api_key(
    keyed_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma's function takes no headers; the ollama client it builds sends OLLAMA_API_KEY from the environment."""
    from chromadb.utils.embedding_functions import OllamaEmbeddingFunction

    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with pytest.raises(ollama.ResponseError) as refused:
        OllamaEmbeddingFunction(url=keyed_daemon.url, model_name="tiny")(["water"])
    assert refused.value.status_code == 401
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    vectors = OllamaEmbeddingFunction(url=keyed_daemon.url, model_name="tiny")(["water", "fire"])
    assert [v.shape for v in vectors] == [(16,), (16,)]


def test_the_daemons_log_never_shows_the_key(keyed_daemon: Daemon) -> None:
    """After the tests above sent it, wrong keys and none: the access lines are there, the key is not."""
    body = {"model": "tiny", "input": "water"}
    with keyed_daemon.client() as client:
        assert client.post("/api/embed", json=body, headers=BEARER).status_code == 200
        assert client.post("/api/embed", json=body, headers={"Authorization": "Bearer not-the-key"}).status_code == 401
    refusal = re.compile(r"POST /api/embed 401 [\d.]+ ms\n")
    wait_for(lambda: refusal.search(keyed_daemon.log()), "the refusal's access line")  # logged once it is answered
    assert KEY not in keyed_daemon.log() and "not-the-key" not in keyed_daemon.log()
