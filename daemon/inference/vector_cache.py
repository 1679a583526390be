"""Finished embedding work, kept for the next request that asks for the same text of the same model.

A repeated query, or a corpus indexed again after a small change, costs a hash per text instead of a pass
through the network. An LRU bounded in bytes (OVEMBED_CACHE_MB) holds raw pooled vectors, before normalization
and `dimensions`, so /api/embeddings (raw), /api/embed and /v1/embeddings (normalized, cut) share entries.
A vector is found by a 16-byte blake2b of everything that makes it:
- the model's digest. Every create gives a model a new one, so a deleted or re-created model's entries are
  unreachable: they age out of the LRU like any unused entry, counted in its bytes until they do. Nothing is
  evicted on a delete, which spares each entry a note of its model.
- the precision the loaded model computes in. It changes at run time when an fp16 overflow pins a model to
  fp32: a request looks up under the precision read before its texts go to the lane, and keeps what the lane
  computed only if the precision is still that one after, so what a pin widened is not filed under the
  narrower precision (but for a batch that starts in the instant between the engine's swap of its infer
  requests and of its precision: at worst an fp32 vector under fp16).
- the context limit in force (the model's, lowered by `num_ctx`) and `truncate`, which decide with the text
  what reaches the network.
- the text as sent. Keyed on the text rather than on its token ids, a repeated text skips tokenizing as well
  as inference, and the key is known before the lane is reached; the price is that two texts cut to the same
  tokens are two entries.

Texts repeated within one request go to the lane once. Only finished, finite work is kept: a lane that fails or
is cancelled keeps nothing, and a non-finite vector is left for the finishing step to refuse, each time it is
asked for. A real network's last bits can depend on a batch's company (all-MiniLM-L6-v2 by 1e-6 in fp32), so
a cached vector is, bit for bit, what its first computation gave.

With a capacity of 0 the cache is off: nothing is hashed, kept or counted, and every text goes to the lane, a
repeated one too, as before the cache existed. Reranks are not cached: a score belongs to a (query, document)
pair, which repeats far less often than a text.

Everything here runs on the event loop, between awaits, and never on a worker thread: one thread touches the
LRU, so it needs no lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daemon.metrics import CACHE_BYTES, CACHE_ENTRIES, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES

KEY_BYTES = 16
# Python's objects around each kept vector (its array header, the entry, the key object, the LRU's slot), as
# tracemalloc measured them for 384- and 1,024-dimension vectors: 330 bytes with the 16 of the key.
ENTRY_OVERHEAD = 320

# A text's blake2b; with the cache off, its position in the request, so no two texts share a key.
_Key = bytes | int


@dataclass(frozen=True, slots=True)
class _Entry:
    """One text's raw pooled vector and the tokens it cost (answered again as prompt_eval_count and usage)."""

    vector: np.ndarray
    tokens: int

    @property
    def size(self) -> int:
        """The bytes this entry holds in the LRU, its key's included."""
        return self.vector.nbytes + KEY_BYTES + ENTRY_OVERHEAD


@dataclass(eq=False)
class Lookup:
    """One request's texts against the cache: the entries found, and what the lane must compute (`missing`,
    each distinct text once, in input order, under `missing_keys`)."""

    precision: str
    keys: list[_Key]
    entries: dict[_Key, _Entry]
    missing: list[str]
    missing_keys: list[_Key]

    def answer(self) -> tuple[np.ndarray, int]:
        """Every text's raw vector in input order, once the lane's are in, and the tokens they cost together."""
        found = [self.entries[key] for key in self.keys]
        return np.stack([entry.vector for entry in found]), sum(entry.tokens for entry in found)


class VectorCache:
    """Raw pooled vectors by model, precision, limit, truncation and text, least recently used out first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # bytes; 0 is off
        self.size = 0
        self._lru: OrderedDict[_Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def look_up(self, digest: str, precision: str, limit: int, truncate: bool, texts: Sequence[str]) -> Lookup:
        """What the cache holds of `texts` for a model (`digest`) computing in `precision`, cut to `limit`."""
        if self.capacity:
            context = f"{digest}\0{precision}\0{limit}\0{truncate:d}\0".encode()
            base = hashlib.blake2b(context, digest_size=KEY_BYTES)
            keys: list[_Key] = [_text_key(base, text) for text in texts]
        else:
            keys = list(range(len(texts)))
        firsts = dict(zip(keys, texts, strict=True))  # distinct keys in the order they first appear
        entries: dict[_Key, _Entry] = {}
        for key in firsts:
            entry = self._lru.get(key)
            if entry is not None:
                self._lru.move_to_end(key)
                entries[key] = entry
        missing_keys = [key for key in firsts if key not in entries]
        if self.capacity:
            CACHE_HITS.inc(len(texts) - len(missing_keys))
            CACHE_MISSES.inc(len(missing_keys))
        return Lookup(precision, keys, entries, [firsts[key] for key in missing_keys], missing_keys)

    def add(self, lookup: Lookup, vectors: np.ndarray, lengths: Sequence[int], precision: str) -> None:
        """The lane's vectors and token counts for `lookup.missing`, in that order: into the lookup's answer, and
        kept when finite and computed in the precision they were looked up under (`precision` is the model's
        now)."""
        keep = self.capacity > 0 and precision == lookup.precision
        for key, vector, tokens in zip(lookup.missing_keys, vectors, lengths, strict=True):
            entry = _Entry(vector, tokens)
            if keep and np.isfinite(vector).all():
                entry = _Entry(vector.copy(), tokens)  # kept as a view, a row would hold its whole batch
                self._keep(key, entry)
            lookup.entries[key] = entry

    def _keep(self, key: _Key, entry: _Entry) -> None:
        if key in self._lru or entry.size > self.capacity:  # computed meanwhile by another request, or too big
            return
        self._lru[key] = entry
        self._count(entry, 1)
        while self.size > self.capacity:
            _, old = self._lru.popitem(last=False)
            self._count(old, -1)
            CACHE_EVICTIONS.inc()

    def _count(self, entry: _Entry, sign: int) -> None:
        """Gauges move by steps, not set, so the caches of several runtimes in one process add up."""
        self.size += sign * entry.size
        CACHE_BYTES.inc(sign * entry.size)
        CACHE_ENTRIES.inc(sign)

    def clear(self) -> None:
        """Forget everything: the runtime is closing."""
        while self._lru:
            self._count(self._lru.popitem()[1], -1)


def _text_key(base: hashlib.blake2b, text: str) -> bytes:
    hasher = base.copy()
    hasher.update(text.encode("utf-8", "surrogatepass"))  # a lone surrogate is the lane's to refuse, not ours
    return hasher.digest()
