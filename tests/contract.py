"""What the contract says every answer looks like, shared by the test files that check it."""

from __future__ import annotations

import httpx

NATIVE_JSON = "application/json; charset=utf-8"

# What langchain_ollama always sends as `options`, every value null unless the user set one.
LANGCHAIN_OPTION_KEYS = frozenset(
    {
        "mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "num_gpu", "num_thread", "repeat_last_n",
        "repeat_penalty", "temperature", "stop", "tfs_z", "top_k", "top_p",
    }
)  # fmt: skip


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> str:
    """Ollama's error form: the status, exactly `{"error": "<string>"}`, and the native content type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == NATIVE_JSON
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert body["error"]
    if message is not None:
        assert body["error"] == message
    return body["error"]
