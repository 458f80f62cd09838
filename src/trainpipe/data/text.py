"""Text corpora for language models: read documents, train or load a tokenizer, pack tokens.

    cfg = TextDataConfig(source="builtin:pydoc_topics", seq_len=64, vocab_size=1000)
    corpus = read_corpus(cfg)                       # fixed train/validation/test documents
    tokenizer = train_tokenizer(corpus.train, cfg)  # or load_tokenizer("s3://.../tokenizer.json")
    train = pack(encode(tokenizer, corpus.train), cfg.seq_len, eos_id(tokenizer))

Sources are JSONL or Parquet (a file or a folder of shards, read through
:func:`trainpipe.data.validation.io.read_table`, so file:// and s3:// both work), plain text
(``.txt`` or ``.txt.gz``: one document per blank-line separated paragraph; a file, a folder or
prefix of such files, or a glob such as ``s3://bucket/corpus/part-*.txt``; a glob may name
JSONL/Parquet shards too), ``builtin:pydoc_topics`` (the
help texts shipped in the standard library's ``pydoc_data``), or ``builtin:reviews`` (generated
short product reviews labelled ``positive``/``negative``, for classifier demos and tests).
The validation and test documents are chosen by a hash of each document's text, not its
position, so they stay the same when the corpus grows or is reordered.

Packed sequences are ``[n, seq_len + 1]`` int64 token ids: documents joined with an end-of-text
token and cut into windows; a causal model reads ``[:, :-1]`` and predicts ``[:, 1:]``. They
are carried in :class:`~trainpipe.data.datasets.Split` (labels unused) so the one Trainer trains
them.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from trainpipe.configbase import Section
from trainpipe.data.datasets import Split
from trainpipe.data.validation.io import DataReadError, concat_shards, read_table
from trainpipe.errors import DataError
from trainpipe.storage import StorageError, Store, open_store, split_uri

BUILTIN_PYDOC = "builtin:pydoc_topics"
BUILTIN_REVIEWS = "builtin:reviews"
PAD, UNK, EOS, MASK, CLS = "<pad>", "<unk>", "<eos>", "<mask>", "<cls>"
SPECIAL_TOKENS = [PAD, UNK, EOS, MASK, CLS]
"""Always ids 0-4 in a trained tokenizer, so models and objectives can rely on them."""


class TextDataConfig(Section):
    source: str = BUILTIN_PYDOC
    """Corpus URI on file:// or s3://: a .jsonl/.parquet file or folder of shards; plain text
    (documents separated by blank lines) as a .txt/.txt.gz file or a folder/prefix of them; a
    glob over one kind of file (``s3://bucket/corpus/part-*.txt``: ``*``, ``?`` and ``[...]``
    match within one path segment); ``builtin:pydoc_topics`` or ``builtin:reviews``
    (labelled, column ``label``)."""

    text_column: str = "text"
    """Column holding the text in JSONL/Parquet sources."""

    label_column: str | None = None
    """Column holding a class label (text classification); None for pretraining corpora."""

    tokenizer: Literal["bpe", "wordpiece"] = "bpe"
    """Tokenizer trained on the training documents: byte-level BPE (GPT-style) or WordPiece
    (BERT-style). Ignored when ``tokenizer_uri`` is set."""

    tokenizer_uri: str | None = None
    """A user's Hugging Face ``tokenizer.json`` (file:// or s3://) to use instead of training
    one."""

    vocab_size: int = Field(2000, ge=64, le=1_000_000)
    """Vocabulary size of a trained tokenizer, special tokens included."""

    seq_len: int = Field(128, ge=4, le=131_072)
    """Tokens per packed training sequence (pretraining) or the truncation length (classifier
    inputs)."""

    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    """Share of documents held out for validation (perplexity)."""

    test_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    """Share of documents held out for the final test."""

    @model_validator(mode="after")
    def _check(self) -> TextDataConfig:
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                f"validation_fraction + test_fraction = "
                f"{self.validation_fraction + self.test_fraction} leaves too little to train "
                "on; keep their sum below 0.8"
            )
        return self


@dataclass(frozen=True)
class Corpus:
    """Documents of each split (and their labels, for a labelled corpus)."""

    train: list[str]
    validation: list[str]
    test: list[str]
    labels: dict[str, list[str]] | None = None


def _pydoc_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics) if topics[name].strip()]


_PRODUCTS = ["kettle", "lamp", "chair", "phone case", "backpack", "blender", "desk", "charger"]
_GOOD = ["great", "sturdy", "lovely", "reliable", "excellent", "quiet", "handy", "perfect"]
_BAD = ["broken", "flimsy", "awful", "noisy", "useless", "cheap", "faulty", "disappointing"]
_TEMPLATES = [
    "the {p} is {a} and i would buy it again",
    "this {p} arrived {a}, {b} overall",
    "my new {p} feels {a}. {b} value for money",
    "honestly a {a} {p}, really {b}",
]


def synthetic_reviews(n: int = 600, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` generated reviews and their labels (``positive``/``negative``, balanced): the
    label is carried only by the adjectives, so a classifier must read the words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        positive = i % 2 == 0
        words = _GOOD if positive else _BAD
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        a, b = rng.choice(words, 2, replace=False)
        product = _PRODUCTS[rng.integers(len(_PRODUCTS))]
        texts.append(template.format(p=product, a=a, b=b) + f" (order {i})")
        labels.append("positive" if positive else "negative")
    return texts, labels


TEXT_SUFFIXES = (".txt", ".txt.gz")
TABLE_SUFFIXES = (".jsonl", ".ndjson", ".parquet", ".pq", ".jsonl.gz", ".ndjson.gz")
_GLOB_CHARS = "*?["


def _is_text(key: str) -> bool:
    return key.lower().endswith(TEXT_SUFFIXES)


def _is_table(key: str) -> bool:
    return key.lower().endswith(TABLE_SUFFIXES)


def _documents_of(uri: str, raw: bytes) -> list[str]:
    if uri.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{uri} is not readable gzip ({exc}); recompress it") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{uri} is not UTF-8 text ({exc}); convert it to UTF-8") from exc
    return [doc.strip() for doc in text.split("\n\n") if doc.strip()]


def _text_documents(store: Store, keys: list[str]) -> list[str]:
    """The paragraphs of every file in ``keys`` (read in sorted order)."""
    documents: list[str] = []
    for key in sorted(keys):
        try:
            raw = store.get_bytes(key)
        except StorageError as exc:
            raise DataError(f"{store.uri_for(key)} is unreadable: {exc}") from exc
        documents += _documents_of(store.uri_for(key), raw)
    return documents


def _visible(keys: list[str]) -> list[str]:
    # Hidden names are bookkeeping (sidecars, temporaries), never shards.
    return [k for k in keys if not any(part.startswith(".") for part in k.split("/"))]


def _listing(store: Store, uri: str) -> list[str]:
    try:
        return _visible(store.list())
    except StorageError as exc:
        raise DataError(f"{uri} is unreadable: {exc}") from exc


def _glob_files(source: str, endpoint_url: str | None) -> tuple[Store, list[str]]:
    """The store above the first segment with a wildcard and the keys under it that match the
    rest of the pattern, segment by segment."""
    scheme, sep, path = source.partition("://")
    if not sep:
        scheme, path = "", source
    parts = path.split("/")
    first = next(i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS))
    base = "/".join(parts[:first]) or "/"
    base_uri = f"{scheme}://{base}" if scheme else base
    pattern = parts[first:]
    try:
        store = open_store(base_uri, endpoint_url=endpoint_url)
    except StorageError as exc:
        raise DataError(f"{source} is unreadable: {exc}") from exc
    keys = [
        key
        for key in _listing(store, source)
        if len(key.split("/")) == len(pattern)
        and all(fnmatch.fnmatchcase(k, p) for k, p in zip(key.split("/"), pattern, strict=True))
    ]
    if not keys:
        raise DataError(
            f"{source} matches no files; check the pattern (wildcards match within one "
            "folder level) and that the shards exist"
        )
    return store, keys


def _one_kind(source: str, keys: list[str]) -> str:
    """``text`` or ``table``: a source's files must all be one or the other."""
    text, table = [k for k in keys if _is_text(k)], [k for k in keys if _is_table(k)]
    if text and table:
        raise DataError(
            f"{source} mixes plain-text files ({text[0]}) and JSONL/Parquet files ({table[0]}); "
            "point text.source at one kind (a glob such as *.txt picks them)"
        )
    if not text and not table:
        raise DataError(
            f"{source} holds no .txt, .jsonl or .parquet files (found {keys[:3]}); name the "
            "corpus files with one of these suffixes"
        )
    return "text" if text else "table"


def _source_files(source: str, endpoint_url: str | None) -> tuple[Store, list[str], str] | None:
    """The files a glob or a folder/prefix of plain-text shards names, with their kind; None
    when the source is one file or a folder of JSONL/Parquet (read_table reads those)."""
    if any(c in source.rpartition("://")[2] for c in _GLOB_CHARS):
        store, keys = _glob_files(source, endpoint_url)
        kind = _one_kind(source, keys)
        return store, [k for k in keys if (_is_text if kind == "text" else _is_table)(k)], kind
    if _is_text(source):
        base, name = split_uri(source)
        try:
            return open_store(base, endpoint_url=endpoint_url), [name], "text"
        except StorageError as exc:
            raise DataError(f"{source} is unreadable: {exc}") from exc
    if _is_table(source):
        return None
    try:
        folder = open_store(source, endpoint_url=endpoint_url)
    except StorageError as exc:
        raise DataError(f"{source} is unreadable: {exc}") from exc
    keys = _listing(folder, source)
    if not any(_is_text(k) for k in keys):
        return None  # a folder of JSONL/Parquet shards, or nothing: read_table says which
    _one_kind(source, [k for k in keys if _is_text(k) or _is_table(k)])
    return folder, [k for k in keys if _is_text(k)], "text"


def _table(uri: str, endpoint_url: str | None) -> pa.Table:
    try:
        return read_table(uri, endpoint_url=endpoint_url)
    except DataReadError as exc:
        raise DataError(str(exc)) from exc


def _shard_table(store: Store, keys: list[str], source: str) -> pa.Table:
    tables = [_table(store.uri_for(key), store.endpoint_url) for key in sorted(keys)]
    try:
        return concat_shards(tables, f"{source}: the matched files")
    except DataReadError as exc:
        raise DataError(str(exc)) from exc


def read_documents(
    cfg: TextDataConfig, *, endpoint_url: str | None = None
) -> tuple[list[str], list[str] | None]:
    """All documents of the source, and their labels when ``label_column`` is set
    (``endpoint_url``: the S3 endpoint for s3:// sources, from the run's storage config)."""
    if cfg.source == BUILTIN_PYDOC:
        if cfg.label_column:
            raise DataError(
                f"{BUILTIN_PYDOC} has no labels; unset text.label_column or give a labelled "
                "JSONL/Parquet source"
            )
        return _pydoc_documents(), None
    if cfg.source == BUILTIN_REVIEWS:
        texts, labels = synthetic_reviews()
        return texts, labels if cfg.label_column else None
    files = _source_files(cfg.source, endpoint_url)
    if files is not None and files[2] == "text":
        if cfg.label_column:
            raise DataError(
                f"{cfg.source} is plain text and has no labels; unset text.label_column or give "
                "a labelled JSONL/Parquet source"
            )
        return _text_documents(files[0], files[1]), None
    if files is not None:
        table = _shard_table(files[0], files[1], cfg.source)
    else:
        table = _table(cfg.source, endpoint_url)
    for column in (cfg.text_column, cfg.label_column):
        if column is not None and column not in table.column_names:
            raise DataError(
                f"{cfg.source} has no column {column!r} (columns: {table.column_names}); set "
                "text.text_column / text.label_column to the right names"
            )
    texts = [str(t) for t in table.column(cfg.text_column).to_pylist() if t is not None]
    if len(texts) != table.num_rows:
        raise DataError(f"{cfg.source}: column {cfg.text_column!r} has empty values; drop them")
    labels = None
    if cfg.label_column:
        labels = [str(v) for v in table.column(cfg.label_column).to_pylist()]
    return texts, labels


def _bucket(text: str) -> float:
    """A stable number in [0, 1) from a document's text (its split does not depend on order)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def read_corpus(cfg: TextDataConfig, *, endpoint_url: str | None = None) -> Corpus:
    """The source's documents assigned to fixed train/validation/test splits."""
    texts, labels = read_documents(cfg, endpoint_url=endpoint_url)
    names = {"train": [], "validation": [], "test": []}
    split_labels: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for i, text in enumerate(texts):
        b = _bucket(text)
        name = (
            "test"
            if b < cfg.test_fraction
            else "validation"
            if b < cfg.test_fraction + cfg.validation_fraction
            else "train"
        )
        names[name].append(text)
        if labels is not None:
            split_labels[name].append(labels[i])
    for name, docs in names.items():
        if not docs:
            raise DataError(
                f"{cfg.source}: the {name} split has no documents ({len(texts)} in all); give "
                "a larger corpus or raise text.validation_fraction/test_fraction"
            )
    return Corpus(**names, labels=split_labels if labels is not None else None)


# -- tokenizers ------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], cfg: TextDataConfig):
    """A BPE (byte-level, GPT-style) or WordPiece (BERT-style) tokenizer trained on ``texts``,
    with :data:`SPECIAL_TOKENS` as ids 0-4."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if cfg.tokenizer == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def tokenizer_from_json(text: str, *, origin: str):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:  # the Rust error type is not importable by name
        raise DataError(
            f"{origin} is not a Hugging Face tokenizer.json ({exc}); save it with "
            "tokenizer.save(path) or PreTrainedTokenizerFast.save_pretrained"
        ) from exc
    for token in (PAD, EOS):
        if tokenizer.token_to_id(token) is None:
            raise DataError(
                f"{origin} has no {token!r} token; add it as a special token "
                f"(tokenizer.add_special_tokens([{token!r}]))"
            )
    return tokenizer


def load_tokenizer(uri: str, *, endpoint_url: str | None = None):
    """A user's ``tokenizer.json`` from file:// or s3://; it must define <pad> and <eos>."""
    base, name = split_uri(uri)
    try:
        raw = open_store(base, endpoint_url=endpoint_url).get_bytes(name)
    except StorageError as exc:
        raise DataError(f"tokenizer {uri} is unreadable: {exc}") from exc
    return tokenizer_from_json(raw.decode("utf-8"), origin=uri)


def tokenizer_for(cfg: TextDataConfig, corpus: Corpus, *, endpoint_url: str | None = None):
    """The configured tokenizer: the user's, or one trained on the training documents only."""
    if cfg.tokenizer_uri:
        return load_tokenizer(cfg.tokenizer_uri, endpoint_url=endpoint_url)
    return train_tokenizer(corpus.train, cfg)


def special_id(tokenizer, token: str) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise DataError(f"the tokenizer has no {token!r} token; add it as a special token")
    return found


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts)]


# -- sequences -------------------------------------------------------------------------------


def pack(documents: list[list[int]], seq_len: int, eos_id: int) -> Split:
    """Documents joined by ``eos_id`` and cut into ``[n, seq_len + 1]`` windows that overlap by
    one token (so every token is a prediction target exactly once); the ragged tail is dropped."""
    stream = np.fromiter((t for doc in documents for t in [*doc, eos_id]), dtype=np.int64, count=-1)
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise DataError(
            f"the corpus has {len(stream)} tokens, fewer than one sequence of seq_len "
            f"{seq_len}; lower text.seq_len or give more text"
        )
    starts = np.arange(n) * seq_len
    windows = stream[starts[:, None] + np.arange(seq_len + 1)[None, :]]
    return Split(windows, np.zeros(n, dtype=np.int64))


def pack_corpus(tokenizer, corpus: Corpus, seq_len: int, *, source: str) -> dict[str, Split]:
    """Every split of ``corpus`` tokenized once and packed (:func:`pack`); a split too short to
    fill one sequence is a :class:`DataError` naming ``source``, the split and the fix."""
    eos_id = special_id(tokenizer, EOS)
    splits = {}
    for split in ("train", "validation", "test"):
        documents = encode(tokenizer, getattr(corpus, split))
        tokens = sum(len(ids) + 1 for ids in documents)  # each document ends with <eos>
        if tokens < seq_len + 1:
            raise DataError(
                f"data error: {source}: the {split} split has {tokens} tokens, fewer than one "
                f"sequence of text.seq_len {seq_len}; give more text or lower text.seq_len"
            )
        splits[split] = pack(documents, seq_len, eos_id)
    return splits


def pad_batch(
    documents: list[list[int]], pad_id: int, max_len: int, *, cls_id: int | None = None
) -> np.ndarray:
    """``[n, longest]`` ids padded with ``pad_id`` (truncated to ``max_len``); with ``cls_id``
    each row starts with it (the encoder's classification token)."""
    rows = [([cls_id] if cls_id is not None else []) + doc for doc in documents]
    rows = [row[:max_len] for row in rows]
    longest = max((len(r) for r in rows), default=1) or 1
    out = np.full((len(rows), longest), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def label_arrays(corpus: Corpus) -> tuple[dict[str, np.ndarray], list[str]]:
    """Integer labels per split and the label names (sorted, from the training split)."""
    if corpus.labels is None:
        raise DataError("text classification needs labels; set text.label_column")
    names = sorted(set(corpus.labels["train"]))
    index = {name: i for i, name in enumerate(names)}
    arrays = {}
    for split in ("train", "validation", "test"):
        unknown = sorted(set(corpus.labels[split]) - set(index))
        if unknown:
            raise DataError(
                f"{split} has labels never seen in train: {unknown[:5]}; give every class "
                "training examples"
            )
        arrays[split] = np.array([index[v] for v in corpus.labels[split]], dtype=np.int64)
    return arrays, names


def classification_splits(
    tokenizer, corpus: Corpus, seq_len: int
) -> tuple[dict[str, Split], list[str]]:
    """Padded token ids and integer labels per split, and the label names (sorted)."""
    labels, names = label_arrays(corpus)
    pad_id, cls_id = special_id(tokenizer, PAD), tokenizer.token_to_id(CLS)
    splits = {}
    for split, y in labels.items():
        ids = pad_batch(encode(tokenizer, getattr(corpus, split)), pad_id, seq_len, cls_id=cls_id)
        # Every split padded to the same width so the Trainer can batch across them.
        width = np.full((len(ids), seq_len), pad_id, dtype=np.int64)
        width[:, : ids.shape[1]] = ids[:, :seq_len]
        splits[split] = Split(width, y)
    return splits, names
