"""Text corpora: sources on file:// and the loopback S3 server, fixed splits, tokenizers
trained in the pipeline or loaded from a user's file, packing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainpipe.data.text import (
    EOS,
    PAD,
    SPECIAL_TOKENS,
    TextDataConfig,
    encode,
    load_tokenizer,
    pack,
    pad_batch,
    read_corpus,
    train_tokenizer,
)
from trainpipe.errors import DataError
from trainpipe.storage import open_store


def jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_trained_tokenizer_has_fixed_specials_and_round_trips(kind):
    cfg = TextDataConfig(tokenizer=kind, vocab_size=300)
    corpus = read_corpus(cfg)  # the standard library's pydoc topics
    tokenizer = train_tokenizer(corpus.train[:40], cfg)
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.get_vocab_size() == 300
    text = "the for statement is used to iterate"
    ids = encode(tokenizer, [text])[0]
    assert 1 not in ids  # no <unk> for words of the corpus
    decoded = tokenizer.decode(ids)
    assert decoded.replace(" ", "") == text.replace(" ", "")


def test_user_tokenizer_loads_from_s3_and_a_bad_one_is_named(s3_bucket, s3_endpoint):
    cfg = TextDataConfig(vocab_size=200)
    tokenizer = train_tokenizer(read_corpus(cfg).train[:20], cfg)
    store = open_store(s3_bucket, endpoint_url=s3_endpoint)
    store.put_bytes("tok/tokenizer.json", tokenizer.to_str().encode())
    loaded = load_tokenizer(f"{s3_bucket}/tok/tokenizer.json", endpoint_url=s3_endpoint)
    sample = "while loops repeat"
    assert encode(loaded, [sample]) == encode(tokenizer, [sample])

    store.put_bytes("tok/bad.json", b'{"not": "a tokenizer"}')
    with pytest.raises(DataError, match=r"is not a Hugging Face tokenizer\.json"):
        load_tokenizer(f"{s3_bucket}/tok/bad.json", endpoint_url=s3_endpoint)
    with pytest.raises(DataError, match="unreadable"):
        load_tokenizer(f"{s3_bucket}/tok/missing.json", endpoint_url=s3_endpoint)


def test_jsonl_corpus_from_s3_splits_by_content_not_order(s3_bucket, s3_endpoint):
    rows = [{"body": f"document number {i} says hello", "tag": "ab"[i % 2]} for i in range(200)]
    store = open_store(s3_bucket, endpoint_url=s3_endpoint)
    store.put_bytes("c/a.jsonl", jsonl(rows))
    store.put_bytes("c/b.jsonl", jsonl(list(reversed(rows))))
    cfg = {"text_column": "body", "label_column": "tag", "validation_fraction": 0.1}
    first = read_corpus(
        TextDataConfig(source=f"{s3_bucket}/c/a.jsonl", **cfg), endpoint_url=s3_endpoint
    )
    second = read_corpus(
        TextDataConfig(source=f"{s3_bucket}/c/b.jsonl", **cfg), endpoint_url=s3_endpoint
    )
    assert sorted(first.validation) == sorted(second.validation)
    assert sorted(first.test) == sorted(second.test)
    assert 5 <= len(first.validation) <= 40 and len(first.train) > 120
    assert not set(first.train) & set(first.validation)
    index = first.train.index("document number 3 says hello")
    assert first.labels["train"][index] == "b"
    with pytest.raises(DataError, match="no column 'text'"):
        read_corpus(TextDataConfig(source=f"{s3_bucket}/c/a.jsonl"), endpoint_url=s3_endpoint)


def test_plain_text_source_is_paragraphs(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(f"paragraph {i}\nsecond line" for i in range(100)) + "\n")
    corpus = read_corpus(TextDataConfig(source=path.as_uri()))
    everything = corpus.train + corpus.validation + corpus.test
    assert len(everything) == 100 and "paragraph 7\nsecond line" in everything


def test_pack_joins_documents_with_eos_and_windows_overlap_by_one():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]  # stream: 10 11 12 E 20 21 E 30 31 32 33 E
    split = pack(docs, seq_len=4, eos_id=2)
    assert split.x.dtype == np.int64
    assert split.x.tolist() == [[10, 11, 12, 2, 20], [20, 21, 2, 30, 31]]
    with pytest.raises(DataError, match=r"lower text\.seq_len"):
        pack([[1, 2]], seq_len=8, eos_id=2)


def test_pad_batch_pads_to_longest_and_truncates():
    out = pad_batch([[5, 6, 7], [8]], pad_id=0, max_len=3, cls_id=4)
    assert out.tolist() == [[4, 5, 6], [4, 8, 0]]
    assert SPECIAL_TOKENS.index(PAD) == 0 and SPECIAL_TOKENS.index(EOS) == 2
