"""Ollama's error texts and status codes, in one table.

Clients only read the `error` string, but people read it too, and Chroma's tests match on
`model "X" not found`, so the wording follows Ollama's current release.
"""

from __future__ import annotations

from enum import Enum


class ApiError(Exception):
    """An answer to the client: a status and a message for `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Err(Enum):
    """Each row is (status, template); call a row with the template's fields to get an ApiError."""

    MISSING_BODY = (400, "missing request body")
    BAD_JSON = (400, "{detail}")
    MODEL_REQUIRED = (400, "model is required")
    INVALID_MODEL_NAME = (400, "invalid model name")
    NAME_INVALID = (400, 'name "{name}" is invalid')
    SOURCE_INVALID = (400, 'source "{name}" is invalid')
    DESTINATION_INVALID = (400, 'destination "{name}" is invalid')
    INVALID_INPUT_TYPE = (400, "invalid input type")
    INVALID_INPUT = (400, "invalid input")
    BAD_ENCODING_FORMAT = (
        400,
        "Invalid value for 'encoding_format' = {value}. Supported values: ['float', 'base64'].",
    )
    INPUT_TOO_LONG = (400, "the input length exceeds the context length")
    CONTEXT_TOO_SMALL = (400, "input after truncation exceeds maximum context length")
    NAN_OUTPUT = (400, "embedding contains NaN or Inf values")
    KEEP_ALIVE_TYPE = (400, "Unsupported type: '{type}'")
    KEEP_ALIVE_VALUE = (400, "{detail}")
    MODEL_EMPTY_NOT_FOUND = (404, "model '' not found")
    MODEL_NOT_FOUND_PULL = (404, 'model "{name}" not found, try pulling it first')
    MODEL_NOT_FOUND_QUOTED = (404, "model '{name}' not found")
    MODEL_NOT_FOUND = (404, 'model "{name}" not found')
    OPTION_TYPE = (400, 'option "{key}" must be of type {kind}')
    MODEL_LOAD_FAILED = (500, "failed to load model {name}: {detail}")
    RUNNER_FAILED = (500, "{detail}")
    REQUEST_CANCELED = (499, "request canceled")
    SERVER_BUSY = (503, "server busy, please try again.  maximum pending requests exceeded")

    def __call__(self, **fields: object) -> ApiError:
        status, template = self.value
        return ApiError(status, template.format(**fields))
