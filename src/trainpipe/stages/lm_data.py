"""lm_data: the language-model DAG's first step. Read and check both corpora, fix their splits,
and train (or load) the tokenizer, so every later step works from the same text.

- pretraining corpus (``language_model.text``; skipped when fine-tuning a Hugging Face
  checkpoint): every split has documents and at least one packed sequence of ``seq_len``
  tokens; the tokenizer has the special tokens the model kind needs; the corpus is tokenized
  and packed here, once, and stored for ``lm_pretrain``;
- labelled corpus (``language_model.classifier_text``): every split has documents, every label
  of validation/test was seen in training.

Writes ``runs/<run_id>/lm_data/``: ``tokenizer.json`` and ``packed_{train,validation,test}.npy``
(``[n, seq_len + 1]`` int32 windows; neither for a Hugging Face checkpoint, whose tokenizer
comes with it and which is not pretrained), ``labelled_text.json`` and ``dataset.json``
(sources, sizes, labels).
"""

from __future__ import annotations

from trainpipe.data.text import (
    EOS,
    MASK,
    PAD,
    label_arrays,
    pack_corpus,
    read_corpus,
    special_id,
    tokenizer_for,
)
from trainpipe.errors import DataError
from trainpipe.stages.context import make_context
from trainpipe.stages.lm_context import (
    LABELLED_TEXT,
    SPLITS,
    TOKENIZER,
    LabelledText,
    put_packed,
)
from trainpipe.storage import StorageError, open_store, split_uri


def check_lm_sources(cfg) -> None:
    """Fail fast, before a pipeline starts, when an input of the language-model DAG does not
    exist (a file, or a folder with at least one file); nothing is read."""
    for key, uri in cfg.language_model.inputs():
        base, name = split_uri(uri)
        try:
            store = open_store(base, endpoint_url=cfg.storage.endpoint_url)
            found = store.head(name) is not None or bool(store.list(name))
        except StorageError as exc:
            raise DataError(f"data error: {key} {uri} is unreadable: {exc}") from None
        if not found:
            raise DataError(
                f"data error: {key} {uri} does not exist; give an existing file or folder "
                "(file:// or s3://), or a builtin: corpus"
            )


def run_lm_data(config_json: str, run_id: str, job_id: str = "") -> tuple[str, str]:
    """Returns (run id, the URI of the stored data)."""
    run_id = run_id or job_id
    if not run_id:
        raise DataError("lm_data needs a run_id or the KFP job id; pass run_id")
    ctx = make_context(config_json, run_id)
    lm = ctx.cfg.language_model
    endpoint = ctx.cfg.storage.endpoint_url
    labelled = read_corpus(lm.classifier_text, endpoint_url=endpoint)
    labels, names = label_arrays(labelled)
    text = LabelledText(names, {s: getattr(labelled, s) for s in SPLITS}, labels)
    dataset = {
        "source": lm.classifier_text.source,
        "task": "classification",
        "label_names": names,
        "labelled_documents": {s: len(text.texts[s]) for s in SPLITS},
    }
    writer = ctx.writer("lm_data")
    if not lm.hf_checkpoint_uri:
        corpus = read_corpus(lm.text, endpoint_url=endpoint)
        tokenizer = tokenizer_for(lm.text, corpus, endpoint_url=endpoint)
        for token in (PAD, EOS, MASK) if lm.model.kind == "masked" else (PAD, EOS):
            special_id(tokenizer, token)  # DataError naming the missing token
        packed = pack_corpus(tokenizer, corpus, lm.text.seq_len, source=lm.text.source)
        # Packed tokens (every one a prediction target once), what an epoch trains on.
        tokens = {s: len(packed[s]) * lm.text.seq_len for s in SPLITS}
        dataset |= {
            "pretrain_source": lm.text.source,
            "pretrain_documents": {s: len(getattr(corpus, s)) for s in SPLITS},
            "pretrain_tokens": tokens,
            "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer": lm.text.tokenizer_uri or f"{lm.text.tokenizer} trained here",
        }
        writer.put_text(TOKENIZER, tokenizer.to_str())
        put_packed(writer, packed)
        print(
            f"[lm_data] pretraining corpus {lm.text.source}: "
            f"{sum(dataset['pretrain_documents'].values())} documents, {tokens['train']:,} "
            f"training tokens; tokenizer with {dataset['vocab_size']} tokens",
            flush=True,
        )
    writer.put_json(LABELLED_TEXT, text.to_json())
    writer.put_json("dataset.json", dataset)
    print(
        f"[lm_data] labelled corpus {lm.classifier_text.source}: "
        + ", ".join(f"{len(text.texts[s])} {s}" for s in SPLITS)
        + f" documents, labels {names}",
        flush=True,
    )
    summary = {k: v for k, v in dataset.items() if k != "label_names"}
    return run_id, writer.commit(summary=summary)
