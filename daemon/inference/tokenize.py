"""Texts, and a reranker's (query, document) pairs, into the token ids its network takes.

As sentence-transformers tokenizes for each kind of model: texts cut to the context with the special tokens
kept; a cross-encoder's pairs joined by its tokenizer's pair template and cut longest first; a language-model
reranker's pairs in its model card's prompt; a ColBERT model's queries and documents marked, and queries padded
with [MASK], as pylate does. Every input is cut to what the context can hold before it is
tokenized, so no request costs more to tokenize than its texts cost to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer

from daemon.inference.errors import ContextTooSmall, InputTooLong
from modelstore.layout import TOKENIZER_FILE
from modelstore.store import ModelRecord

# No real text has longer tokens: WordPiece makes a word of over 100 characters one [UNK], BPE merges are shorter.
CHARS_PER_TOKEN = 100


@dataclass(frozen=True)
class TokenizedText:
    """Token ids ready for the network; `ids` already carries the special tokens. A (query, document) pair
    for a reranker also has its segment ids, 0 for the query and 1 for the document in BERT's layout.

    A ColBERT query attends to its first `attended` tokens only (None: all), the [MASK] tokens after them give
    vectors without being attended to; `query` says it is one (a document drops its punctuation's vectors)."""

    ids: np.ndarray
    type_ids: np.ndarray | None = None
    attended: int | None = None
    query: bool = False

    def __len__(self) -> int:
        return len(self.ids)


def longest_first(first: int, second: int, room: int) -> tuple[int, int]:
    """How many tokens of each side of a pair the tokenizers library keeps when it cuts the pair to `room`
    with its longest-first strategy (utils/truncation.rs): the shorter side whole if the longer can give way
    alone, else both at half. tests/test_units.py holds it to the library's own truncation."""
    if first + second <= room:
        return first, second
    shorter, longer = sorted((first, second))
    longer = shorter if shorter > room else max(shorter, room - shorter)
    if shorter + longer > room:
        shorter, longer = room // 2, room // 2 + room % 2
    return (longer, shorter) if first > second else (shorter, longer)


class ModelTokenizer:
    """A stored model's tokenizer, as its network wants its inputs."""

    def __init__(self, record: ModelRecord) -> None:
        self.spec = record.spec
        # Read by Python, which lets go of the GIL while the disk is slow; from_file would hold it throughout.
        self.tokenizer = Tokenizer.from_str((record.path / TOKENIZER_FILE).read_text(encoding="utf-8"))
        # The repo's tokenizer.json may carry its own truncation and padding (all-MiniLM: 128); the model's
        # context length rules instead, and padding is done per batch.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._special_count = self.tokenizer.num_special_tokens_to_add(is_pair=False)
        self._pair_special_count = self.tokenizer.num_special_tokens_to_add(is_pair=True)
        self.pad_id = self._pad_id()
        masks = [i for i in map(self.tokenizer.token_to_id, ("[MASK]", "<mask>")) if i is not None]
        # What a text never counts among its words: bge-m3's lexical weights drop these ids (FlagEmbedding drops
        # cls, eos, pad and unk: every special token but the mask, which a text may spell out).
        self.special_ids = frozenset(
            i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special and i not in masks
        )
        # A ColBERT model's markers, its expansion token (the mask), and the tokens whose vectors documents drop:
        # pylate looks each skiplist word up as one token, and a word that is none is its unknown token.
        rules = self.spec.late_interaction
        self._markers = (self._id_of(rules.query_prefix), self._id_of(rules.document_prefix)) if rules else (0, 0)
        self._expansion_id = masks[0] if masks else self.pad_id
        unknown = self.tokenizer.token_to_id("[UNK]")
        skipped = (self.tokenizer.token_to_id(word) for word in (rules.skiplist if rules else ()))
        self.skip_ids = frozenset(i if i is not None else unknown for i in skipped) - {None}
        # A language-model reranker's fixed prompt around each pair, tokenized once.
        form = self.spec.pair_format
        self._prompt_ends = tuple(
            self.tokenizer.encode(form[k], add_special_tokens=False).ids if form else [] for k in ("prefix", "suffix")
        )

    def _pad_id(self) -> int:
        padding = self.tokenizer.padding or {}
        if "pad_id" in padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<|endoftext|>"):
            token_id = self.tokenizer.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    def _id_of(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        return self.pad_id if token_id is None else token_id  # create refused a model whose markers are not tokens

    def texts(self, texts: Sequence[str], limit: int, truncate: bool, queries: bool = False) -> list[TokenizedText]:
        """Token ids per text, cut to `limit` tokens with the special tokens kept, as sentence-transformers does;
        for a ColBERT model, marked as `queries` or documents and cut to their lengths, as pylate does.

        Raises InputTooLong for a text over the limit when truncation is off, and ContextTooSmall for a
        non-empty text when the special tokens fill the whole limit, as Ollama refuses both.
        """
        rules = self.spec.late_interaction
        marker = 0 if rules is None else 1
        if rules is not None:
            limit = min(limit, rules.query_length if queries else rules.document_length)
        if truncate:  # what lies past this is cut anyway: never tokenize megabytes to keep a few hundred tokens
            texts = [t[: limit * CHARS_PER_TOKEN] for t in texts]
        bodies = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        specials = self._special_count + marker
        room = max(0, limit - specials)
        out: list[TokenizedText] = []
        for body in bodies:
            if body.ids and room <= 0:
                raise ContextTooSmall(f"a limit of {limit} leaves no room beside {specials} special tokens")
            if len(body.ids) > room:
                if not truncate:
                    raise InputTooLong(f"{len(body.ids) + specials} tokens over a limit of {limit}")
                body.truncate(room)
            ids = self.tokenizer.post_process(body, None, add_special_tokens=True).ids
            out.append(
                TokenizedText(np.asarray(ids, dtype=np.int64)) if rules is None else self._marked(ids, limit, queries)
            )
        return out

    def _marked(self, ids: list[int], length: int, query: bool) -> TokenizedText:
        """pylate's ColBERT input: the marker after [CLS]; a query padded with [MASK] to `length`, attended to
        only as far as its own tokens unless the model attends to them."""
        rules = self.spec.late_interaction
        assert rules is not None
        marked = [*ids[:1], self._markers[0 if query else 1], *ids[1:]]
        if not (query and rules.expand_queries) or len(marked) >= length:
            return TokenizedText(np.asarray(marked, dtype=np.int64), query=query)
        attended = None if rules.attend_to_expansion else len(marked)
        marked += [self._expansion_id] * (length - len(marked))
        return TokenizedText(np.asarray(marked, dtype=np.int64), attended=attended, query=True)

    def pairs(self, query: str, documents: Sequence[str], limit: int, truncate: bool = True) -> list[TokenizedText]:
        """Each (query, document) pair joined as the model's tokenizer joins a pair, with its segment ids, and
        cut to `limit` tokens as sentence-transformers' CrossEncoder cuts it: longest first, as the tokenizers
        library does it, so a short query stays whole. InputTooLong for a pair over the limit when truncation
        is off. The query is tokenized once, whatever the number of documents, and never past what a pair
        could hold."""
        if self.spec.pair_format:
            return self._tokenize_prompts(self._within(query, limit), documents, limit, truncate)
        room = limit - self._pair_special_count
        if room < 2:
            raise ContextTooSmall(f"a limit of {limit} leaves no room beside {self._pair_special_count} special tokens")
        cap = limit * CHARS_PER_TOKEN
        query_tokens = self.tokenizer.encode(query[:cap], add_special_tokens=False)
        query_length = len(query_tokens.ids)
        bodies = self.tokenizer.encode_batch([d[:cap] for d in documents], add_special_tokens=False)
        # The query cut to each length a pair keeps of it; post_process leaves its inputs as they are.
        cut_queries: dict[int, Encoding] = {query_length: query_tokens}
        out: list[TokenizedText] = []
        for body in bodies:
            keep_query, keep_document = longest_first(query_length, len(body.ids), room)
            if not truncate and (keep_query, keep_document) != (query_length, len(body.ids)):
                raise InputTooLong(f"a query and document over the limit of {limit} tokens")
            first = cut_queries.get(keep_query)
            if first is None:  # Encoding.truncate cuts in place: each length gets a copy of its own
                first = cut_queries[keep_query] = Encoding.merge([query_tokens])
                first.truncate(keep_query)
            body.truncate(keep_document)
            full = self.tokenizer.post_process(first, body, add_special_tokens=True)
            out.append(TokenizedText(np.asarray(full.ids, dtype=np.int64), np.asarray(full.type_ids, dtype=np.int64)))
        return out

    def _within(self, query: str, limit: int) -> str:
        """The query cut to the text of its first `limit` tokens: no prompt can hold more of it, and the prompt
        repeats it for every document."""
        encoded = self.tokenizer.encode(query[: limit * CHARS_PER_TOKEN], add_special_tokens=False)
        if len(encoded.ids) <= limit:
            return query[: limit * CHARS_PER_TOKEN]
        return query[: encoded.offsets[limit - 1][1]]

    def _tokenize_prompts(
        self, query: str, documents: Sequence[str], limit: int, truncate: bool
    ) -> list[TokenizedText]:
        """A language-model reranker's prompt per pair, as its model card builds it: the instruction, query and
        document, cut at the end to leave room for the fixed prefix and suffix around them."""
        form = self.spec.pair_format
        prefix, suffix = self._prompt_ends
        room = limit - len(prefix) - len(suffix)
        if room < 1:
            raise ContextTooSmall(
                f"a limit of {limit} leaves no room beside the {len(prefix) + len(suffix)}-token prompt"
            )
        cap = limit * CHARS_PER_TOKEN
        bodies = self.tokenizer.encode_batch(
            [form["body"].format(instruction=form["instruction"], query=query, document=d[:cap]) for d in documents],
            add_special_tokens=False,
        )
        if not truncate and any(len(b.ids) > room for b in bodies):
            raise InputTooLong(f"a query and document over the limit of {limit} tokens")
        return [TokenizedText(np.asarray([*prefix, *b.ids[:room], *suffix], dtype=np.int64)) for b in bodies]
