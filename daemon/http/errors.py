"""Every error answer, in one table: what the edge finds wrong with a request, and what layers below raise.

Clients only read the `error` string, but people read it too, and Chroma's tests match on
`model "X" not found`, so the wording follows Ollama's current release. The edge raises `Err` rows
itself; exceptions from inference and the store are mapped once, here, by class. Routes need no
`try/except`: Starlette calls `answer` for `ApiError`, every class in `RAISED`, and any other exception.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from daemon.http.responses import OllamaJSON, PlainJSON
from daemon.inference.errors import (
    ContextTooSmall,
    InferenceFailed,
    InferenceStalled,
    InputTooLong,
    ModelDamaged,
    ModelDeleted,
    ModelLoadFailed,
    MultivectorTooLarge,
    NoDenseOutput,
    NonFiniteEmbedding,
    QueueFull,
    Stopping,
    TooManyInputs,
    WrongTask,
)
from daemon.inference.pulls import PullFailed, ShuttingDown
from modelstore.pull_errors import (
    ArchitectureUnsupported,
    ConnectionBroke,
    ConversionFailed,
    DigestMismatch,
    DiskFilled,
    DiskTooSmall,
    FileNotFound,
    HubOffline,
    HubRefused,
    IndexDamaged,
    NothingToConvert,
    PullCancelled,
    RepoGated,
    RepoNotFound,
    RevisionNotFound,
    ShardsMissing,
    UnknownName,
)
from modelstore.sizes import human_bytes


class ApiError(Exception):
    """An answer to the client: a status and a message for `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelElsewhere(ApiError):
    """A model ovembed does not hold (or, for a pull, cannot fetch): the upstream Ollama's when there is one
    (OVEMBED_UPSTREAM, http/upstream.py), else answered as the error it carries."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.message)


@dataclass(frozen=True)
class Reply:
    """One row of the table: a status and a message template; call it with the template's fields."""

    status: int
    template: str

    def __call__(self, **fields: object) -> ApiError:
        return ApiError(self.status, self.template.format(**fields))


class Err:
    """What the edge itself finds wrong with a request, as Ollama answers it."""

    MISSING_BODY = Reply(400, "missing request body")
    BAD_JSON = Reply(400, "{detail}")  # Go's decoder text, e.g. `unexpected EOF`
    MODEL_REQUIRED = Reply(400, "model is required")
    INVALID_MODEL_NAME = Reply(400, "invalid model name")
    NAME_INVALID = Reply(400, 'name "{name}" is invalid')
    SOURCE_INVALID = Reply(400, 'source "{name}" is invalid')
    DESTINATION_INVALID = Reply(400, 'destination "{name}" is invalid')
    INVALID_INPUT_TYPE = Reply(400, "invalid input type")
    INVALID_INPUT = Reply(400, "invalid input")
    BAD_ENCODING_FORMAT = Reply(
        400, "Invalid value for 'encoding_format' = {value}. Supported values: ['float', 'base64']."
    )
    KEEP_ALIVE_TYPE = Reply(400, "Unsupported type: '{type}'")
    KEEP_ALIVE_VALUE = Reply(400, "{detail}")  # Go's time.ParseDuration text
    OPTION_TYPE = Reply(400, 'option "{key}" must be of type {kind}')
    MODEL_EMPTY_NOT_FOUND = Reply(404, "model '' not found")
    MODEL_NOT_FOUND_PULL = Reply(404, 'model "{name}" not found, try pulling it first')
    MODEL_NOT_FOUND_QUOTED = Reply(404, "model '{name}' not found")
    MODEL_NOT_FOUND = Reply(404, 'model "{name}" not found')
    REQUEST_CANCELED = Reply(499, "request canceled")
    BODY_TOO_LARGE = Reply(413, "request body too large: this server accepts {limit} bytes (OVEMBED_MAX_BODY_BYTES)")
    BODY_STALLED = Reply(408, "request body stalled: nothing arrived for {seconds} s (OVEMBED_READ_TIMEOUT)")
    DOCUMENTS_TYPE = Reply(400, "{field} must be a list of {kinds}")
    QUERY_REQUIRED = Reply(400, "query is required")
    NO_RERANKER = Reply(404, "no reranker is installed: pull one (ovembed pull bge-reranker-v2-m3) and send again")
    TOP_N_NEGATIVE = Reply(400, "{field} must be 0 (all) or more, not {value}")
    RERANKER_UNNAMED = Reply(
        400, 'name the reranker in "model": {count} are installed, and only one can be the default'
    )
    INPUT_TYPE = Reply(400, 'input_type "{value}" is not one of query, document, search_query, search_document')
    INPUTS_EMPTY = Reply(422, "`inputs` cannot be empty")  # TEI's validation error
    UPSTREAM_DOWN = Reply(
        502,
        "the Ollama at {address} (OVEMBED_UPSTREAM) did not answer ({reason}): check that it runs and listens "
        "there, e.g. with OLLAMA_HOST set to that address",
    )
    UPSTREAM_LOOP = Reply(
        508,
        "OVEMBED_UPSTREAM={address} leads back to ovembed itself: set it to the address your own Ollama listens on",
    )
    NO_SPARSE_MODEL = Reply(
        404, "no model with sparse vectors is installed: pull one (ovembed pull bge-m3) and send again"
    )
    SPARSE_UNNAMED = Reply(
        400, 'name the model in "model": {count} with sparse vectors are installed, and only one can be the default'
    )
    UNAUTHORIZED = Reply(
        401,
        'unauthorized: send "Authorization: Bearer <key>" with the key the daemon has in OVEMBED_API_KEY '
        "(or OVEMBED_API_KEY_FILE)",
    )


_MISSING = "pull model manifest: file does not exist: "  # Ollama's words for a pull of what the registry lacks


def _kept(exc: Any) -> str:
    """What a failed pull left for the next one, and how to be rid of it."""
    if not exc.kept_bytes:
        return "pull again to retry"
    kept = f"the {human_bytes(exc.kept_bytes)} downloaded so far are kept"
    return f"pull again to resume: {kept} (`ovembed pull --prune` removes them)"


# Words a template names whose wording depends on an exception's fields rather than copying one.
PHRASES: dict[str, Callable[[Any], str]] = {
    "target": lambda exc: f"{exc.file} from hf.co/{exc.repo}" if exc.file else f"hf.co/{exc.repo}",
    "answer": lambda exc: "an error" if exc.status is None else str(exc.status),
    "kept": _kept,
    "given": lambda exc: " and ".join(exc.outputs),
    "size_text": lambda exc: human_bytes(exc.size),
    "limit_text": lambda exc: human_bytes(exc.limit),
    "ask": lambda exc: " or ".join(f'"{output}": true' for output in exc.outputs),
}


# Exceptions raised below the edge, each mapped once; fields come from the exception's attributes and from
# PHRASES. Looked up along the class's MRO, so a subclass row wins over its base.
RAISED: dict[type[Exception], Reply] = {
    QueueFull: Reply(503, "server busy, please try again.  maximum pending requests exceeded"),
    WrongTask: Reply(400, '"{name}" does not support {task}'),
    NoDenseOutput: Reply(400, '"{name}" gives no dense embedding, only {given}: ask /api/embed for it with {ask}'),
    Stopping: Reply(503, "ovembed is shutting down and could not finish this request in time; send it again later"),
    TooManyInputs: Reply(400, "too many inputs: {count}, this server accepts {limit} per request (OVEMBED_MAX_INPUTS)"),
    InputTooLong: Reply(400, "the input length exceeds the context length"),
    ContextTooSmall: Reply(400, "input after truncation exceeds maximum context length"),
    NonFiniteEmbedding: Reply(400, "embedding contains NaN or Inf values"),
    MultivectorTooLarge: Reply(
        400,
        "the token vectors of these inputs would take {size_text} as float32, over OVEMBED_MAX_MULTIVECTOR_MB "
        "({limit_text}): send fewer or shorter inputs per request",
    ),
    ModelDeleted: Reply(404, 'model "{name}" not found, try pulling it first'),
    ModelDamaged: Reply(
        500,
        'model "{name}" is damaged: {missing} missing or empty in its folder; '
        "pull or create it again, or remove it with `ovembed rm {name}`",
    ),
    ModelLoadFailed: Reply(
        500,
        "failed to load model {name}: {reason}. Its files may be damaged: pull or create it again, "
        "or remove it with `ovembed rm {name}`",
    ),
    InferenceFailed: Reply(500, "inference failed: {reason}"),
    InferenceStalled: Reply(
        500,
        "inference failed: the device stopped responding (a batch of {name} had no answer after {seconds:.0f} s); "
        "ovembed abandoned it and is compiling the model again: send the request again in a moment",
    ),
    # Ollama answers a failed non-streamed pull with the error's own status: 404 for what does not exist,
    UnknownName: Reply(
        404,
        _MISSING + "ovembed does not know {name}; pull an Ollama embedding model (all-minilm, nomic-embed-text, "
        "mxbai-embed-large, bge-m3, ...) or any sentence-transformers repo as hf.co/ORG/REPO",
    ),
    RepoNotFound: Reply(404, _MISSING + "no repository hf.co/{repo}"),
    RevisionNotFound: Reply(404, _MISSING + "hf.co/{repo} has no revision {revision!r}"),
    RepoGated: Reply(
        404, "hf.co/{repo} is gated: accept its terms on Hugging Face, then give the daemon an access token in HF_TOKEN"
    ),
    FileNotFound: Reply(404, "hf.co/{repo} has no file {file!r} at {commit:.12}"),
    ShardsMissing: Reply(404, "hf.co/{repo}: {index} names shards the repo does not have"),
    # 400 for what ovembed does not convert,
    NothingToConvert: Reply(
        400,
        "hf.co/{repo} has no OpenVINO IR (openvino/openvino_model.xml), no ONNX export (onnx/model.onnx) and no "
        "safetensors checkpoint (model.safetensors), which are what ovembed converts without PyTorch. Export one "
        "elsewhere with `optimum-cli export openvino --task feature-extraction -m {repo} DIR`, then run "
        "`ovembed create NAME --from DIR`",
    ),
    ArchitectureUnsupported: Reply(400, "hf.co/{repo} has only a safetensors checkpoint, and {reason}"),
    IndexDamaged: Reply(400, "hf.co/{repo} has a damaged {index}: {reason}"),
    # 502 when the hub cannot be asked, 503 when the daemon stops, and 500 for the rest.
    HubOffline: Reply(502, "the daemon runs with HF_HUB_OFFLINE set, so it cannot download models"),
    ConnectionBroke: Reply(502, "the connection to Hugging Face broke while fetching {target} ({reason}); {kept}"),
    ShuttingDown: Reply(
        503, "ovembed is shutting down; the files downloaded so far are kept, and pulling again resumes"
    ),
    HubRefused: Reply(500, "Hugging Face answered {answer} for {target}; try the pull again later"),
    DigestMismatch: Reply(500, "digest mismatch for {file}: the download was corrupted; pull again"),
    ConversionFailed: Reply(500, "hf.co/{repo} downloaded but could not be converted: {reason}"),
    DiskTooSmall: Reply(500, "{disk}"),  # ovembed's own sentence, said where the space ran out (diskspace.py)
    DiskFilled: Reply(500, "{disk} ({kept})"),
    PullFailed: Reply(500, "pull failed: {reason}"),
    PullCancelled: Reply(499, "pull canceled"),
    # The client hung up while sending its body; nobody reads the answer.
    ClientDisconnect: Reply(499, "request canceled"),
}


def as_api_error(exc: Exception) -> ApiError:
    """The answer for any exception: its row, or a 500 that says what broke (a bug: uvicorn logs its traceback)."""
    if isinstance(exc, ApiError):
        return exc
    for cls in type(exc).__mro__:
        reply = RAISED.get(cls)
        if reply is not None:
            named = {field for _, field, _, _ in string.Formatter().parse(reply.template) if field}
            return reply(**vars(exc), **{name: PHRASES[name](exc) for name in named & set(PHRASES)})
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}")


def ollama_error(error: ApiError) -> OllamaJSON:
    return OllamaJSON({"error": error.message}, status_code=error.status)


def openai_error(error: ApiError) -> PlainJSON:
    """OpenAI's error form, typed by status as Ollama's middleware types it."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(error.status, "api_error")
    body = {"error": {"message": error.message, "type": kind, "param": None, "code": None}}
    return PlainJSON(body, status_code=error.status)


def cohere_error(error: ApiError) -> PlainJSON:
    """Cohere's error form, which Jina's clients read too."""
    return PlainJSON({"message": error.message}, status_code=error.status)


def tei_error(error: ApiError) -> PlainJSON:
    """TEI's error form, typed as TEI types its errors."""
    kind = "validation" if error.status < 500 else {503: "overloaded"}.get(error.status, "backend")
    return PlainJSON({"error": error.message, "error_type": kind}, status_code=error.status)


# The error shape of each API family, by path; anything else is Ollama's.
_SHAPES = (
    ("/v1/rerank", cohere_error),
    ("/v2/rerank", cohere_error),
    ("/rerank", tei_error),
    ("/embed_sparse", tei_error),
    ("/v1/", openai_error),
)


async def answer(request: Request, exc: Exception) -> Response:
    """The exception handler: Ollama's `{"error": ...}`, or the shape of the API the path belongs to."""
    error = as_api_error(exc)
    path = request.url.path
    shape = next((shape for prefix, shape in _SHAPES if path.startswith(prefix)), ollama_error)
    return shape(error)


HANDLED: tuple[type[Exception], ...] = (ApiError, *RAISED)
