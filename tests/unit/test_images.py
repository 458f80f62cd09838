"""Image folders and tar shards become Parquet image shards; decode checks name the shard."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from trainpipe.data.images import main as prepare_main
from trainpipe.data.images import prepare_images
from trainpipe.data.shards import discover_shards, split_shards
from trainpipe.data.streaming import StreamingConfig, StreamSplit, read_all, stream_loader
from trainpipe.data.validation.streaming import validate_shards
from trainpipe.errors import DataError


def png(value: int, size: int = 8, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).convert(mode).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def image_split(shards) -> StreamSplit:
    config = StreamingConfig(loader_workers=0)
    return StreamSplit(
        shards.uri, shards.shards, "label", ["image"], [1, 8, 8], ["dark", "light"], config
    )


def image_folder(root, per_class: int = 10):
    for label, value in (("dark", 30), ("light", 220)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            (root / label / f"{i:03d}.png").write_bytes(png(value + i))
    return root


def test_folder_to_shards_decodes_in_the_loader(tmp_path):
    prepare_images(str(image_folder(tmp_path / "src")), str(tmp_path / "shards"), rows_per_shard=5)
    shards = discover_shards(str(tmp_path / "shards"))
    assert len(shards.shards) == 4 and shards.rows == 20
    split = image_split(shards)
    data = read_all(split)
    assert data.x.shape == (20, 1, 8, 8)
    dark = data.x[data.y == 0]
    assert len(dark) == 10 and np.all(dark < 0.2) and np.all(data.x[data.y == 1] > 0.8)


def test_tar_shards_like_webdataset(tmp_path):
    (tmp_path / "src").mkdir()
    with tarfile.open(tmp_path / "src" / "shard-000.tar", "w") as tar:
        for i in range(6):
            for name, data in ((f"s{i}.png", png(10 * i)), (f"s{i}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert (
        prepare_main([str(tmp_path / "src"), str(tmp_path / "out"), "--rows-per-shard", "2"]) == 0
    )
    shards = discover_shards(str(tmp_path / "out"))
    table = shards.read_rows(shards.shards[0], np.array([0, 1]))
    assert set(table.column("label").to_pylist()) <= {"0", "1"}
    assert shards.rows == 6


def test_corrupt_and_wrongly_sized_images_name_their_shard(tmp_path):
    src = image_folder(tmp_path / "src", per_class=12)
    (src / "dark" / "005.png").write_bytes(b"\x89PNG not really an image")
    (src / "light" / "003.png").write_bytes(png(200, size=16))
    prepare_images(str(src), str(tmp_path / "shards"), rows_per_shard=6)
    shards = discover_shards(str(tmp_path / "shards"))
    splits = split_shards(shards.shards, validation_fraction=0.2, test_fraction=0.2, seed=0)
    report, _ = validate_shards(shards, splits, label_column="label")
    found = {a.check: a.message for a in report.blocking}
    assert set(found) == {"unreadable", "array_shape"}
    assert "shard part-" in found["unreadable"] and "unreadable image" in found["unreadable"]
    assert "[1, 16, 16], not [1, 8, 8]" in found["array_shape"]
    pixels = report.splits["train"].columns["image"]
    assert 0.0 <= pixels.min < pixels.max <= 1.0  # pixel statistics


def test_decoding_a_corrupt_image_in_training_names_the_shard(tmp_path):
    src = image_folder(tmp_path / "src")
    (src / "dark" / "002.png").write_bytes(b"garbage")
    prepare_images(str(src), str(tmp_path / "shards"), rows_per_shard=10)
    shards = discover_shards(str(tmp_path / "shards"))
    split = image_split(shards)
    with pytest.raises(DataError, match=r"shard file://.*part-0000\d\.parquet row \d+: unreadable"):
        read_all(split)
    # From a DataLoader worker process the error is the same single line.
    with pytest.raises(DataError) as caught:
        for _ in stream_loader(split, epoch=1, batch_size=4, workers=2):
            pass
    assert str(caught.value).startswith("data error: shard file://")
    assert "\n" not in str(caught.value) and "unreadable image" in str(caught.value)


def test_empty_source_is_one_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="no class sub-folders"):
        prepare_images(str(tmp_path / "src"), str(tmp_path / "out"))
