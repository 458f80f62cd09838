"""Text corpora: sources on file:// and the loopback S3 server, fixed splits, tokenizers
trained in the pipeline or loaded from a user's file, packing."""

from __future__ import annotations

import gzip
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
    read_documents,
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


def paragraphs(start: int, stop: int) -> bytes:
    return "\n\n".join(
        f"paragraph {i} of the corpus\nits second line" for i in range(start, stop)
    ).encode()


@pytest.mark.parametrize("where", ["file", "s3"])
def test_text_shards_in_a_folder_keep_the_held_out_text_of_one_file(where, tmp_path, request):
    """A folder/prefix of .txt (and .txt.gz) shards reads every paragraph; its validation and
    test documents are those of the same text in one file, and stay when a shard is added."""
    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        root = request.getfixturevalue("s3_bucket") + "/corpus"
    else:
        endpoint, root = None, (tmp_path / "corpus").as_uri()
    store = open_store(root, endpoint_url=endpoint)
    store.put_bytes("one.txt", paragraphs(0, 200))
    store.put_bytes("all/part-0.txt", paragraphs(0, 120))
    store.put_bytes("all/part-1.txt.gz", gzip.compress(paragraphs(120, 200)))
    cfg = {"validation_fraction": 0.1, "test_fraction": 0.1}
    single = read_corpus(TextDataConfig(source=f"{root}/one.txt", **cfg), endpoint_url=endpoint)
    sharded = read_corpus(TextDataConfig(source=f"{root}/all/", **cfg), endpoint_url=endpoint)
    assert len(sharded.train + sharded.validation + sharded.test) == 200
    assert sharded.validation == single.validation and sharded.test == single.test
    assert 5 <= len(sharded.validation) <= 40

    store.put_bytes("all/part-2.txt", paragraphs(200, 400))
    grown = read_corpus(TextDataConfig(source=f"{root}/all", **cfg), endpoint_url=endpoint)
    assert set(sharded.validation) < set(grown.validation)
    assert set(sharded.test) < set(grown.test)
    assert not set(grown.train) & (set(grown.validation) | set(grown.test))


def test_text_glob_picks_matching_shards_and_errors_name_the_fix(s3_bucket, s3_endpoint):
    store = open_store(s3_bucket, endpoint_url=s3_endpoint)
    store.put_bytes("c/part-0.txt", paragraphs(0, 100))
    store.put_bytes("c/part-1.txt", paragraphs(100, 200))
    store.put_bytes("c/notes.txt", b"not part of the corpus")
    store.put_bytes("c/sub/part-9.txt", b"deeper than the pattern")
    corpus = read_corpus(
        TextDataConfig(source=f"{s3_bucket}/c/part-*.txt"), endpoint_url=s3_endpoint
    )
    everything = corpus.train + corpus.validation + corpus.test
    assert len(everything) == 200 and "not part of the corpus" not in everything
    assert "deeper than the pattern" not in everything

    with pytest.raises(DataError, match=r"matches no files; check the pattern"):
        read_corpus(TextDataConfig(source=f"{s3_bucket}/c/shard-*.txt"), endpoint_url=s3_endpoint)
    store.put_bytes("c/extra.jsonl", jsonl([{"text": "a row"}]))
    with pytest.raises(DataError, match=r"mixes plain-text files .* and JSONL/Parquet"):
        read_corpus(TextDataConfig(source=f"{s3_bucket}/c/"), endpoint_url=s3_endpoint)
    with pytest.raises(DataError, match="plain text and has no labels"):
        read_corpus(
            TextDataConfig(source=f"{s3_bucket}/c/part-*.txt", label_column="label"),
            endpoint_url=s3_endpoint,
        )
    store.put_bytes("bad/part-0.txt", b"\xff\xfe not utf-8")
    with pytest.raises(DataError, match=r"bad/part-0\.txt is not UTF-8 text"):
        read_corpus(TextDataConfig(source=f"{s3_bucket}/bad/*.txt"), endpoint_url=s3_endpoint)


def test_glob_over_jsonl_shards_reads_them_in_order(tmp_path):
    rows = [{"body": f"row {i} of the table corpus", "tag": "ab"[i % 2]} for i in range(120)]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "b-1.jsonl").write_bytes(jsonl(rows[60:]))
    (tmp_path / "t" / "b-0.jsonl").write_bytes(jsonl(rows[:60]))
    (tmp_path / "t" / "other.jsonl").write_bytes(jsonl([{"body": "left out", "tag": "a"}]))
    cfg = TextDataConfig(
        source=f"{tmp_path.as_uri()}/t/b-*.jsonl", text_column="body", label_column="tag"
    )
    texts, labels = read_documents(cfg)
    assert texts == [r["body"] for r in rows] and labels == [r["tag"] for r in rows]


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
