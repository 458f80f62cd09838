"""Image sources: an image folder or WebDataset-style tar shards, prepared as Parquet shards of
encoded bytes that the streaming loader decodes in its worker processes.

    python -m trainpipe.data.images SOURCE TARGET [--rows-per-shard N] [--endpoint-url URL]

SOURCE is a folder/prefix (file:// or s3://) holding either one sub-folder per class with
JPEG/PNG files (``cat/001.jpg``), or ``*.tar`` shards whose members are ``KEY.jpg|jpeg|png`` plus
``KEY.cls`` (the class name or number), as WebDataset writes them. TARGET receives Parquet shards
with columns ``image`` (the file's bytes, not decoded) and ``label`` plus ``shards.json``; point
``data.source`` at it. Decoding (Pillow, scaled to [0, 1], channels first) happens where rows
are read: in the DataLoader workers while training, and in streaming validation, which checks
every image of every shard (unreadable, or not the size of the others) and names the shard.
"""

from __future__ import annotations

import argparse
import io
import posixpath
import sys
import tarfile

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from trainpipe.errors import DataError, TrainpipeError
from trainpipe.storage import open_store

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_SUFFIXES = (".cls", ".txt")


def is_image_column(type_: pa.DataType) -> bool:
    return pa.types.is_binary(type_) or pa.types.is_large_binary(type_)


def decode_one(data: bytes, shape: list[int] | None) -> np.ndarray:
    """One image as float32 [C, H, W] in [0, 1]; ValueError saying what is wrong."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            channels = shape[0] if shape else (1 if image.mode in ("L", "1", "I;16") else 3)
            converted = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable image ({exc})") from None
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    if shape is not None and list(pixels.shape) != list(shape):
        raise ValueError(f"image is {list(pixels.shape)}, not {list(shape)} like the others")
    return pixels


def decode_images(values, shape: list[int], where, out: np.ndarray | None = None) -> np.ndarray:
    """Images (encoded bytes) as [n, C, H, W] (into ``out`` when given); a bad one is a
    DataError naming ``where(i)`` (or ``where`` and the row, when it is a string)."""
    if out is None:
        out = np.empty((len(values), *shape), dtype=np.float32)
    for row, data in enumerate(values):
        try:
            if data is None:
                raise ValueError("missing image")
            out[row] = decode_one(data, shape)
        except ValueError as exc:
            place = f"{where} row {row}" if isinstance(where, str) else where(row)
            raise DataError(
                f"data error: {place}: {exc}; fix or drop the image and rerun validate_data"
            ) from None
    return out


def _folder_items(store) -> list[tuple[str, str, bytes]]:
    items = []
    for key in store.list():
        if key.lower().endswith(IMAGE_SUFFIXES) and "/" in key:
            label = posixpath.basename(posixpath.dirname(key))
            items.append((key, label, store.get_editable_bytes(key)))
    return items


def _tar_items(store, key: str) -> list[tuple[str, str, bytes]]:
    members: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(store.get_editable_bytes(key))) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                stem, dot, suffix = member.name.rpartition(".")
                if dot:
                    members.setdefault(stem, {})[f".{suffix.lower()}"] = tar.extractfile(
                        member
                    ).read()
    except tarfile.TarError as exc:
        raise DataError(
            f"data error: tar shard {store.uri_for(key)} cannot be read ({exc}); rewrite it"
        ) from None
    items = []
    for stem, files in sorted(members.items()):
        image = next((files[s] for s in IMAGE_SUFFIXES if s in files), None)
        label = next((files[s] for s in LABEL_SUFFIXES if s in files), None)
        if image is None or label is None:
            raise DataError(
                f"data error: tar shard {store.uri_for(key)}: sample {stem!r} needs an image "
                f"({'/'.join(IMAGE_SUFFIXES)}) and a label ({'/'.join(LABEL_SUFFIXES)}) member"
            )
        items.append((f"{key}:{stem}", label.decode().strip(), image))
    return items


def prepare_images(
    source: str, target: str, *, rows_per_shard: int = 10_000, endpoint_url: str | None = None
) -> list[dict]:
    """Image folder or tar shards at ``source`` -> Parquet shards at ``target``."""
    from trainpipe.data.shards import write_shards

    store = open_store(source, endpoint_url=endpoint_url)
    tars = [k for k in store.list() if k.endswith(".tar")]
    if tars:
        items = [item for key in tars for item in _tar_items(store, key)]
    else:
        items = _folder_items(store)
    if not items:
        raise DataError(
            f"data error: {source} has no class sub-folders with {'/'.join(IMAGE_SUFFIXES)} "
            "files and no *.tar shards; fix the source"
        )
    table = pa.table(
        {
            "key": [k for k, _, _ in items],
            "image": pa.array([b for _, _, b in items], type=pa.binary()),
            "label": [label for _, label, _ in items],
        }
    )
    # Spread classes over shards (folder order would put each class in its own shards).
    order = np.random.default_rng(0).permutation(len(table))
    return write_shards(
        table.take(order),
        target,
        rows_per_shard=rows_per_shard,
        row_group_rows=min(1024, rows_per_shard),
        endpoint_url=endpoint_url,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainpipe.data.images")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--rows-per-shard", type=int, default=10_000)
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// URIs")
    args = parser.parse_args(argv)
    try:
        entries = prepare_images(
            args.source,
            args.target,
            rows_per_shard=args.rows_per_shard,
            endpoint_url=args.endpoint_url,
        )
    except TrainpipeError as exc:
        print(f"trainpipe: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(entries)} shards, {sum(e['rows'] for e in entries)} images to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
