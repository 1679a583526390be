"""What can go wrong between a request's texts and its vectors, said as what happened.

The HTTP edge maps each class to Ollama's status and text (daemon/http/errors.py); nothing here knows them.
"""

from __future__ import annotations


class Stopping(Exception):
    """The daemon is stopping, and its shutdown bound passed before this request's texts were done."""


class WrongTask(ValueError):
    """An embedding model asked to rerank, a reranker asked to embed, or a model asked for an output it does not
    give (sparse, multivector)."""

    def __init__(self, name: str, task: str) -> None:
        super().__init__(f"{name} does not support {task}")
        self.name = name
        self.task = task


class NoDenseOutput(ValueError):
    """A plain embedding request to a model that gives no dense vector (SPLADE's sparse, ColBERT's token
    vectors): `outputs` are what it does give."""

    def __init__(self, name: str, outputs: tuple[str, ...]) -> None:
        super().__init__(f"{name} gives no dense vector, only {' and '.join(outputs)}")
        self.name = name
        self.outputs = outputs


class MultivectorTooLarge(ValueError):
    """A request whose token vectors would take more than OVEMBED_MAX_MULTIVECTOR_MB."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes of token vectors, at most {limit}")
        self.size = size
        self.limit = limit


class QueueFull(Exception):
    """OLLAMA_MAX_QUEUE requests are already waiting."""


class TooManyInputs(ValueError):
    """A request with more texts than OVEMBED_MAX_INPUTS allows."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} inputs, at most {limit} per request")
        self.count = count
        self.limit = limit


class InputTooLong(ValueError):
    """An input over the context length, with truncation switched off."""


class ContextTooSmall(ValueError):
    """A limit (a tiny `num_ctx`) that leaves no room for any text beside the special tokens."""


class NonFiniteEmbedding(ValueError):
    """The network produced NaN or infinity for some text."""


class ModelDeleted(LookupError):
    """The model was deleted while the request waited for it to load."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} was deleted")
        self.name = name


class ModelDamaged(RuntimeError):
    """A stored model whose folder lacks files (or holds them empty): nothing to load until it is repaired."""

    def __init__(self, name: str, missing: list[str]) -> None:
        super().__init__(f"{name} is damaged: {', '.join(missing)} missing or empty")
        self.name = name
        self.missing = ", ".join(missing)


class ModelLoadFailed(RuntimeError):
    """OpenVINO or the tokenizer could not load a stored model."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"failed to load model {name}: {reason}")
        self.name = name
        self.reason = reason


class InferenceFailed(RuntimeError):
    """A batch failed inside OpenVINO; the request is not at fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"inference failed: {reason}")
        self.reason = reason


class InferenceStalled(RuntimeError):
    """A batch ran far past its expected time (batcher.py's watchdog): the device stopped responding. The batch
    was abandoned and the model is being compiled again on fresh threads; the request is not at fault."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"a batch of {name} had no answer after {seconds:.0f} s")
        self.name = name
        self.seconds = seconds
