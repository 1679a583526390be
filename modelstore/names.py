"""Ollama model names: parsing, matching and on-disk layout.

Mirrors Ollama's ``types/model/name.go`` so that any name the Ollama CLI and clients accept resolves to the
same model here. Names become directories in the store, so every part is checked against Ollama's character
rules, which also rules out ``.``, ``..``, separators and empty parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
HUGGINGFACE_HOSTS = frozenset({"hf.co", "huggingface.co"})

# A first character of [A-Za-z0-9_] keeps "." and ".." out of every part.
_MODEL_OR_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
# Each part is a folder name in the store; Linux filesystems allow 255 bytes, less than Ollama's 350 for a host.
_MAX_PATH_PART = 255


class InvalidName(ValueError):
    """The text is not a valid Ollama model name (Ollama answers 400 "invalid model name")."""


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name; case is kept as given, use ``key`` to compare."""

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        # Checked here, not only in parse_name, so no ModelName can carry a part unsafe to use as a path.
        checks = (
            (_HOST, self.host),
            (_NAMESPACE, self.namespace),
            (_MODEL_OR_TAG, self.model),
            (_MODEL_OR_TAG, self.tag),
        )
        for pattern, part in checks:
            if not pattern.fullmatch(part) or len(part) > _MAX_PATH_PART:
                raise InvalidName(f"invalid model name part {part!r} in {self.path_parts}")

    @property
    def display(self) -> str:
        """Ollama's DisplayShortest: a non-default host keeps the namespace too; the tag is always shown."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Case-folded parts, because Ollama matches installed names with EqualFold."""
        return (self.host.casefold(), self.namespace.casefold(), self.model.casefold(), self.tag.casefold())

    @property
    def path_parts(self) -> tuple[str, str, str, str]:
        """Directory names under the store, as Ollama lays out manifests: host/namespace/model/tag."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def is_huggingface(self) -> bool:
        """Whether the name points at a Hugging Face repository (``hf.co/ORG/REPO``)."""
        return self.host.lower() in HUGGINGFACE_HOSTS

    @property
    def hf_repo(self) -> str | None:
        """``ORG/REPO`` for Hugging Face names, else None."""
        return f"{self.namespace}/{self.model}" if self.is_huggingface else None

    @property
    def is_cloud(self) -> bool:
        """Ollama sends ``:cloud`` and ``:<size>-cloud`` tags (any case) to ollama.com; we have none."""
        tag = self.tag.lower()
        return tag == "cloud" or tag.endswith("-cloud")


def parse_name(text: str) -> ModelName:
    """Parse ``[host/][namespace/]model[:tag]`` the way Ollama's ParseName does, filling Ollama's defaults.

    Raises InvalidName for anything Ollama would reject.
    """
    rest = text.strip()
    tag = DEFAULT_TAG
    # Only a ":" after the last "/" starts the tag; an earlier one belongs to a host port.
    if rest.rfind(":") > rest.rfind("/"):
        rest, _, tag = rest.rpartition(":")
    *prefix, model = rest.rsplit("/", 2)
    if len(prefix) == 2:
        host, namespace = prefix
        # Ollama drops a URL scheme from the host ("https://hf.co/org/repo").
        host = host.partition("://")[2] or host
    else:
        host, namespace = DEFAULT_HOST, prefix[0] if prefix else DEFAULT_NAMESPACE
    try:
        return ModelName(host, namespace, model, tag)
    except InvalidName:
        raise InvalidName(f"invalid model name: {text!r}") from None
