"""Reads request bodies the way Ollama's Go handlers do, so wrong input gets the same 400s.

Go's encoding/json matches field names without regard to case, turns null into the zero value, and
names the struct and field in its type errors; clients show those texts to people.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request

from daemon.durations import DurationError, keep_alive_seconds, parse_go_duration
from daemon.http.errors import Err, Reply
from daemon.http.state import settings_of

_JSON_KINDS = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}


def parse_body(raw: bytes, struct: str) -> Fields:
    """The JSON object in a request body, or Ollama's 400 for an empty or malformed one.

    `null` is an empty request, as Go decodes it into zero values.
    """
    if not raw.strip():
        raise Err.MISSING_BODY()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Err.BAD_JSON(detail=_go_syntax_error(raw, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), "value")
        raise Err.BAD_JSON(detail=f"json: cannot unmarshal {kind} into Go value of type api.{struct}")
    return Fields(data, struct)


def _go_syntax_error(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """Go's wording for the two errors people meet: a cut-off body and a stray character."""
    text = raw.decode("utf-8", errors="replace")
    position = min(max(exc.pos, 0), len(text))
    rest = text[position:].strip()
    if not rest:
        return "unexpected EOF"
    return f"invalid character {rest[0]!r} looking for beginning of value"


class Fields:
    """Typed access to one request's fields, with Go's error text naming `struct`."""

    def __init__(self, data: dict[str, Any], struct: str) -> None:
        self.data = data
        self.struct = struct
        self._folded = {k.casefold(): k for k in reversed(list(data))}

    def raw(self, name: str) -> Any:
        """The value of a field, matched as Go matches (exact name first, then any case); None if absent."""
        if name in self.data:
            return self.data[name]
        key = self._folded.get(name.casefold())
        return self.data[key] if key is not None else None

    def _type_error(self, name: str, value: Any, go_type: str) -> Exception:
        kind = _JSON_KINDS.get(type(value), "value")
        if kind == "number" and go_type == "int":
            kind = f"number {value}"
        return Err.BAD_JSON(
            detail=f"json: cannot unmarshal {kind} into Go struct field {self.struct}.{name} of type {go_type}"
        )

    def string(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._type_error(name, value, "string")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.raw(name)
        if value is None or isinstance(value, bool):
            return value
        raise self._type_error(name, value, "bool")

    def integer(self, name: str) -> int:
        value = self.raw(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._type_error(name, value, "int")
        if isinstance(value, float) and not value.is_integer():
            raise self._type_error(name, value, "int")
        return int(value)

    def options(self, name: str = "options") -> dict[str, Any]:
        value = self.raw(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._type_error(name, value, "map[string]interface {}")
        return value

    def keep_alive(self, name: str = "keep_alive") -> float | None:
        """Seconds, math.inf for "forever", or None when unset; Ollama's api.Duration rules.

        A number past Go's longest duration means forever; such a string is Go's "invalid duration".
        """
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            go_type = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}[type(value)]
            raise Err.KEEP_ALIVE_TYPE(type=go_type)
        if isinstance(value, str):
            try:
                seconds = parse_go_duration(value)
            except DurationError as exc:
                raise Err.KEEP_ALIVE_VALUE(detail=str(exc)) from None
        else:
            seconds = float(value)
        return keep_alive_seconds(seconds)


# Ollama's api.Options fields and the JSON kind each accepts (api/types.go, Options.FromMap).
_INT_OPTIONS = {
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "mirostat",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
}
_FLOAT_OPTIONS = {
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "mirostat_tau",
    "mirostat_eta",
    "tfs_z",
}
_BOOL_OPTIONS = {
    "penalize_newline",
    "numa",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
}


def required_texts(value: Any, empty: Reply) -> list[str]:
    """OpenAI's and TEI's inputs: a string (`""` is one empty text) or a non-empty list of strings; `empty` for
    nothing or `[]`, `invalid input type` for anything else."""
    if value is None or value == []:
        raise empty()
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise Err.INVALID_INPUT_TYPE()


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Ollama's Options.FromMap: unknown keys and nulls are ignored; a known key of the wrong type is refused.

    Ollama answers that with 500; it is the caller's mistake, so ovembed answers 400 with the same text.
    """
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Err.OPTION_TYPE(key=key, kind="integer")
            checked[key] = int(value)
        elif key in _FLOAT_OPTIONS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise Err.OPTION_TYPE(key=key, kind="float")
            checked[key] = float(value)
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise Err.OPTION_TYPE(key=key, kind="boolean")
            checked[key] = value
        elif key == "stop":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise Err.OPTION_TYPE(key=key, kind="array of strings")
            checked[key] = value
    return checked


async def read_fields(request: Request, struct: str) -> Fields:
    """The request's JSON body as Fields, with Go's errors naming `api.<struct>`."""
    settings = settings_of(request)
    raw = await read_body(request, settings.max_body_bytes, settings.read_timeout)
    request.state.body = raw  # kept for the upstream Ollama, should the model named be its (http/upstream.py)
    return parse_body(raw, struct)


async def read_body(request: Request, limit: int, pause: float) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass `limit` bytes, before it is all held,
    and with 408 when the client sends nothing for `pause` seconds on the way (a stalled body holds a slot)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Err.BODY_TOO_LARGE(limit=limit)
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(pause):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise Err.BODY_STALLED(seconds=pause) from None
        size += len(chunk)
        if size > limit:
            raise Err.BODY_TOO_LARGE(limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
