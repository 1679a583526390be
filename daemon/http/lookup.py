"""From a name in a request to a stored model, with each endpoint's own texts for a bad or missing name."""

from __future__ import annotations

from daemon.http.errors import Err, ModelElsewhere, Reply
from daemon.http.request import Fields
from modelstore.names import InvalidName, ModelName, parse_name
from modelstore.store import ModelRecord, ModelStore


def parse_model(text: str, *, empty: Reply, invalid: Reply) -> ModelName:
    """A name from a request; each endpoint has its own errors for an empty and a malformed one."""
    if not text.strip():
        raise empty(name=text)
    try:
        return parse_name(text)
    except InvalidName:
        raise invalid(name=text) from None


def parse_embed_model(text: str) -> ModelName:
    """The embedding endpoints' rules: `model '' not found` for no name, `invalid model name` for a bad one."""
    return parse_model(text, empty=Err.MODEL_EMPTY_NOT_FOUND, invalid=Err.INVALID_MODEL_NAME)


def find_record(store: ModelStore, name: ModelName) -> ModelRecord | None:
    """Installed models only; `:cloud` names go to ollama.com in Ollama, and ovembed has no cloud."""
    return None if name.is_cloud else store.get(name)


def installed(store: ModelStore, name: ModelName, missing: Reply, shown: str) -> ModelRecord:
    """The stored model; a name ovembed does not hold is the upstream Ollama's, if there is one, else `missing`."""
    record = find_record(store, name)
    if record is None:
        raise ModelElsewhere(missing(name=shown))
    return record


def name_field(fields: Fields) -> str:
    """Old ollama-python and ollama-js send `name` where current clients send `model`."""
    return fields.string("model") or fields.string("name")


def only_model(candidates: list[ModelRecord], none: Reply, many: Reply) -> ModelRecord:
    """TEI serves one model; here a request that names none gets the store's only model for its task, of the
    `candidates` the route picked (names that are copies of one model count once), or `none` or `many`."""
    models = {r.digest: r for r in candidates}
    if not models:
        raise none()
    if len(models) > 1:
        raise many(count=len(models))
    return next(iter(models.values()))
