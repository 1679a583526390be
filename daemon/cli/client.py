"""Talking to a running daemon from the terminal: one request, or a pull's NDJSON stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from daemon.config import Settings


class CliError(Exception):
    """Printed as `Error: ...` with exit status 1, as the ollama CLI does."""


def _error_text(response: httpx.Response) -> str:
    """The daemon's own message from an error answer."""
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def _headers(settings: Settings) -> dict[str, str]:
    """The daemon's API key from this environment (OVEMBED_API_KEY or OVEMBED_API_KEY_FILE), when one is set."""
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def _refused(settings: Settings, response: httpx.Response) -> CliError:
    """The daemon's message; for a 401, also what this command sent."""
    text = _error_text(response)
    if response.status_code != 401:
        return CliError(text)
    sent = "the key it has was refused" if settings.api_key else "neither is set"
    return CliError(f"{text}; this command sends OVEMBED_API_KEY or OVEMBED_API_KEY_FILE from its environment: {sent}")


def _not_running(settings: Settings, exc: Exception) -> CliError:
    return CliError(f"could not connect to ovembed at {settings.listen.base_url} ({exc}); is `ovembed serve` running?")


def call(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """One request to the daemon; any error answer becomes the daemon's own message."""
    timeout = httpx.Timeout(600.0, connect=5.0)
    try:
        with httpx.Client(base_url=settings.listen.base_url, timeout=timeout, headers=_headers(settings)) as client:
            response = client.request(method, path, content=orjson.dumps(body) if body is not None else None)
    except httpx.TransportError as exc:
        raise _not_running(settings, exc) from exc
    if response.status_code >= 400:
        raise _refused(settings, response)
    return response


def pull_events(settings: Settings, model: str) -> Iterator[dict[str, Any]]:
    """The pull's status objects as they come; an `error` line, or a lost connection, raises CliError."""
    base_url = settings.listen.base_url
    try:
        with (
            httpx.Client(
                base_url=base_url, timeout=httpx.Timeout(None, connect=5.0), headers=_headers(settings)
            ) as client,
            client.stream("POST", "/api/pull", json={"model": model, "stream": True}) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise _refused(settings, response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise CliError(f"unexpected line from ovembed: {line!r}") from exc
                if "error" in event:
                    raise CliError(str(event["error"]))
                yield event
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise _not_running(settings, exc) from exc
    except httpx.TransportError as exc:
        raise CliError(f"lost the connection to ovembed at {base_url} during the pull ({exc})") from exc
