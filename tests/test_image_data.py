"""CIFAR-10, CIFAR-100 and TinyImageNet read from files in their real on-disk layouts,
and every kind of bad data folder refused in one line (exit 2, nothing written)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from image_files import (
    class_colours,
    write_batch,
    write_cifar10,
    write_cifar100,
    write_tiny_imagenet,
)

from lifelong import UserError
from lifelong.cli import main
from lifelong.data.images import _CACHE, load_image_dataset


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test reads its own files: no dataset kept from another test, a private cache."""
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    _CACHE.clear()
    yield
    _CACHE.clear()


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_batches_load_with_str_or_bytes_keys(tmp_path: Path, bytes_keys: bool) -> None:
    write_cifar10(tmp_path, per_class=3, bytes_keys=bytes_keys)
    data = load_image_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (150, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (30, 3, 32, 32) and data.n_classes == 10
    assert data.y_train.tolist() == np.tile(np.repeat(np.arange(10), 3), 5).tolist()
    written = class_colours(np.repeat(np.arange(10), 3), 32, seed=0)  # data_batch_1's
    assert torch.equal(data.x_train[:30], torch.from_numpy(written))  # rows are C, H, W


def test_the_dataset_folder_itself_may_be_the_data_dir(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, per_class=1)
    assert len(load_image_dataset("cifar10", folder).y_test) == 10


def test_cifar100_reads_fine_labels_and_superclasses(tmp_path: Path) -> None:
    write_cifar100(tmp_path, per_class=1, bytes_keys=True)
    data = load_image_dataset("cifar100", tmp_path)
    assert data.n_classes == 100 and data.y_train.tolist() == list(range(100))
    assert data.superclass_of == tuple(c % 20 for c in range(100))


def test_tinyimagenet_tree_decodes_to_sorted_wnid_labels_and_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_imagenet(tmp_path, n_classes=3, per_class=4)
    data = load_image_dataset("tinyimagenet", tmp_path)
    assert data.x_train.shape == (12, 3, 64, 64) and data.x_test.shape == (9, 3, 64, 64)
    assert data.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # wnids.txt is not sorted
    assert data.y_test.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    red = data.x_train[:, 0].float().mean((1, 2)).view(3, 4)  # JPEG is lossy; colour stays
    assert (red.min(1).values[1:] - red.max(1).values[:-1] > 10).all()  # 22 a class apart
    _CACHE.clear()
    import lifelong.data.tiny_imagenet

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(lifelong.data.tiny_imagenet, "_decoded", no_decoding)
    again = load_image_dataset("tinyimagenet", tmp_path)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def _bad_cifar(tmp_path: Path, what: str) -> Path:
    folder = write_cifar10(tmp_path, per_class=1)
    batch = folder / "data_batch_3"
    if what == "missing":
        batch.unlink()
    elif what == "truncated":
        batch.write_bytes(batch.read_bytes()[:500])
    elif what == "garbage":
        batch.write_bytes(b"not a pickle at all")
    elif what == "size":
        small = np.zeros((10, 1024), dtype=np.uint8)
        write_batch(batch, {"data": small, "labels": list(range(10))}, bytes_keys=False)
    elif what == "labels":
        rows = np.zeros((10, 3072), dtype=np.uint8)
        write_batch(batch, {"data": rows, "labels": [0] * 9}, bytes_keys=False)
    elif what == "no labels":
        write_batch(batch, {"data": np.zeros((10, 3072), dtype=np.uint8)}, bytes_keys=True)
    elif what == "not a dict":
        batch.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    return batch


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("missing", "data_batch_3 is missing"),
        ("truncated", "data_batch_3 is truncated or corrupt"),
        ("garbage", "data_batch_3 is truncated or corrupt"),
        ("size", "hold 1024 values each, expected 3072 uint8 values per image (3x32x32"),
        ("labels", "'labels' should be 10 labels in 0..9"),
        ("no labels", "holds no 'labels'"),
        ("not a dict", "holds a list, expected a pickled CIFAR batch"),
    ],
)
def test_a_bad_cifar_batch_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str, expected: str
) -> None:
    _bad_cifar(tmp_path, what)
    out = tmp_path / "out"
    args = ["run", "split-cifar10", "-s", "naive", "--data-dir", str(tmp_path), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "data_batch_3" in err
    assert not out.exists()


def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    class Calls:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "ran"),))

    batch = _bad_cifar(tmp_path, "none")
    batch.write_bytes(pickle.dumps({"data": Calls(), "labels": []}, protocol=2))
    with pytest.raises(UserError, match=r"asks for posix\.mkdir, which a CIFAR batch never"):
        load_image_dataset("cifar10", tmp_path)
    assert not (tmp_path / "ran").exists()


def test_cifar100_superclasses_must_be_consistent(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, per_class=2)
    fine = np.repeat(np.arange(100), 2)
    coarse = fine % 20
    coarse[1] = 7  # class 0's second image in another superclass
    entry = {"data": np.zeros((200, 3072), np.uint8), "fine_labels": fine.tolist()}
    write_batch(folder / "train", {**entry, "coarse_labels": coarse.tolist()}, bytes_keys=False)
    with pytest.raises(UserError, match="exactly one coarse label"):
        load_image_dataset("cifar100", tmp_path)


def _bad_tiny(tmp_path: Path, what: str) -> str:
    from PIL import Image

    folder = write_tiny_imagenet(tmp_path, n_classes=2, per_class=2)
    image = next((folder / "train").glob("*/images/*_1.JPEG"))
    if what == "size":
        Image.new("RGB", (32, 40)).save(image)
        return f"{image} is 32x40, expected 64x64 (TinyImageNet's size)"
    if what == "corrupt":
        image.write_bytes(b"\xff\xd8 not really a jpeg")
        return f"{image} is not a readable JPEG"
    if what == "class folder":
        (folder / "wnids.txt").write_text("n99999999\n" + (folder / "wnids.txt").read_text())
        return "n99999999/images is missing"
    if what == "annotation":
        notes = folder / "val" / "val_annotations.txt"
        notes.write_text(notes.read_text() + "val_9.JPEG\tn12345678\t0\t0\t1\t1\n")
        return "val_annotations.txt line 7: expected 'file<TAB>wnid<TAB>box'"
    (folder / "val" / "images" / "val_0.JPEG").unlink()
    return "val_0.JPEG is missing: "


@pytest.mark.parametrize("what", ["size", "corrupt", "class folder", "annotation", "val image"])
def test_a_bad_tinyimagenet_tree_is_one_line_and_nothing_is_cached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    expected = _bad_tiny(tmp_path, what)
    assert main(["run", "split-tinyimagenet", "-s", "naive", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "split-cifar10 needs --data-dir DIR holding cifar-10-batches-py/"),
        (["--data-dir", "{tmp}"], "no cifar-10-batches-py/ in {tmp}: put torchvision's"),
        (["--data-dir", "{tmp}/nowhere"], "does not exist"),
    ],
)
def test_missing_cifar_folder_says_where_and_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["run", "split-cifar10", "-s", "naive", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert expected.format(tmp=tmp_path).replace("split-cifar10", "cifar10") in err, err


def test_download_of_tinyimagenet_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="torchvision has no downloader for tinyimagenet; downl"):
        load_image_dataset("tinyimagenet", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def _fake_torchvision(monkeypatch: pytest.MonkeyPatch, **classes: type) -> None:
    """Make ``import torchvision.datasets`` give a module holding ``classes``."""
    import importlib.machinery
    import sys
    import types

    vision = types.ModuleType("torchvision")
    vision.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    datasets = types.ModuleType("torchvision.datasets")
    for name, cls in classes.items():
        setattr(datasets, name, cls)
    vision.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


class OnlineCIFAR10:  # torchvision online: the archive unpacked into root/cifar-10-batches-py
    def __init__(self, root: str, download: bool) -> None:
        write_cifar10(Path(root), per_class=1)


class OfflineCIFAR10:  # torchvision offline: the folder made, then a multi-line error
    def __init__(self, root: str, download: bool) -> None:
        (Path(root) / "cifar-10-batches-py").mkdir()
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\n<urlopen error>\n")


def test_download_fetches_cifar_with_torchvision_into_a_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_torchvision(monkeypatch, CIFAR10=OnlineCIFAR10)
    data = load_image_dataset("cifar10", tmp_path / "new", download=True)
    assert data.x_train.shape == (50, 3, 32, 32)


def test_a_failed_cifar_download_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_torchvision(monkeypatch, CIFAR10=OfflineCIFAR10)
    with pytest.raises(UserError) as info:
        load_image_dataset("cifar10", tmp_path / "new", download=True)
    assert "\n" not in str(info.value) and "downloading 'cifar10' into" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_or_unwritable_cache_is_decoded_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_imagenet(tmp_path, n_classes=2, per_class=2)
    first = load_image_dataset("tinyimagenet", tmp_path)
    (kept,) = (tmp_path / "cache" / "data").glob("tinyimagenet-*.npz")
    kept.write_bytes(b"damaged")
    _CACHE.clear()
    assert torch.equal(load_image_dataset("tinyimagenet", tmp_path).x_train, first.x_train)
    assert kept.stat().st_size > 1000  # written again
    monkeypatch.setenv("LIFELONG_CACHE", str(kept))  # a file: no folder can be made there
    _CACHE.clear()
    assert torch.equal(load_image_dataset("tinyimagenet", tmp_path).x_test, first.x_test)
