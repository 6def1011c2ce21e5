"""Colour image sources in torchvision's on-disk layouts: CIFAR-10, CIFAR-100, TinyImageNet.

``--data-dir DIR`` holds ``cifar-10-batches-py/``, ``cifar-100-python/`` or
``tiny-imagenet-200/`` (or is that folder itself). CIFAR's batches are Python pickles;
they are read with an unpickler that builds numpy arrays and nothing else, so a data file
cannot run code. TinyImageNet's JPEG files are decoded with Pillow once; the decoded uint8
tensors are kept in the cache (``$LIFELONG_CACHE/data``), keyed by the files' names, sizes
and times, and load from there in about a second afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.cache_dir import cache_home
from lifelong.data.mnist import Dataset, check_dir, torchvision_download
from lifelong.errors import UserError

__all__ = ["FOLDERS", "IMAGE_DATASETS", "ImageDataset", "load_image_dataset"]

IMAGE_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "tinyimagenet")
FOLDERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "tinyimagenet": "tiny-imagenet-200",
}
_FILES = {
    "cifar10": ((*(f"data_batch_{i}" for i in range(1, 6)),), ("test_batch",)),
    "cifar100": (("train",), ("test",)),
    "tinyimagenet": (("wnids.txt", "train"), ("val/val_annotations.txt", "val/images")),
}
_TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_CIFAR_SHAPE = (3, 32, 32)
_TINY_SHAPE = (3, 64, 64)
_CACHE: dict[tuple[str, str], ImageDataset] = {}


@dataclass(frozen=True)
class ImageDataset(Dataset):
    """Colour images and labels of one source, split into train and test: a
    :class:`lifelong.data.mnist.Dataset` whose images are ``[N, 3, H, W]`` uint8 and whose
    ``name`` is one of ``IMAGE_DATASETS`` (``n_classes``: 10, 100 or TinyImageNet's wnids).

    Attributes:
        superclass_of: CIFAR-100's coarse label of every fine class (None elsewhere).
    """

    superclass_of: tuple[int, ...] | None = None


def load_image_dataset(
    name: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False
) -> ImageDataset:
    """Load a colour image source once per process; later calls return the same object.

    Args:
        name: One of ``IMAGE_DATASETS``.
        data_dir: the folder holding the dataset's folder (or that folder itself).
        download: fetch CIFAR with torchvision into ``data_dir`` when it is not there.

    Raises:
        UserError: one line naming the missing, truncated or malformed file and what was
            expected.
    """
    if data_dir is None:
        raise UserError(
            f"{name} needs --data-dir DIR holding {FOLDERS[name]}/ (torchvision's layout)"
            + (", or --download where a network exists" if name in _TORCHVISION else "")
        )
    root = Path(data_dir).expanduser().resolve()
    if not (download and not root.exists()):
        root = check_dir(root)
    key = (name, str(root))
    if key not in _CACHE:
        folder = _folder(name, root)
        if folder is None and download:
            _download(name, root)
            folder = _folder(name, root)
        if folder is None:
            raise UserError(_not_found(name, root))
        _CACHE[key] = _read(name, folder)
    return _CACHE[key]


def _folder(name: str, root: Path) -> Path | None:
    """The dataset's folder: ``root/<folder>``, or ``root`` itself when it is that folder."""
    for folder in (root / FOLDERS[name], root):
        if folder.is_dir() and (folder.name == FOLDERS[name] or _has_files(name, folder)):
            return folder
    return None


def _has_files(name: str, folder: Path) -> bool:
    train, test = _FILES[name]
    return (folder / train[0]).exists() or (folder / test[0]).exists()


def _not_found(name: str, root: Path) -> str:
    how = (
        "or pass --download where a network exists"
        if name in _TORCHVISION
        else f"downloaded from {_TINY_URL} and unzipped"
    )
    return f"no {FOLDERS[name]}/ in {root}: put torchvision's {FOLDERS[name]}/ there, {how}"


def _download(name: str, root: Path) -> None:
    if name not in _TORCHVISION:
        raise UserError(
            f"--download: torchvision has no downloader for {name}; download {_TINY_URL},"
            f" unzip it into {root} and pass --data-dir {root}"
        )
    files = f"torchvision's {FOLDERS[name]}/"
    torchvision_download(name, _TORCHVISION[name], root, (root / FOLDERS[name],), files)


def _read(name: str, folder: Path) -> ImageDataset:
    """Read the dataset in ``folder`` after checking that every expected file is there."""
    for part in _FILES[name]:
        for file in part:
            if not (folder / file).exists():
                expected = ", ".join(f for p in _FILES[name] for f in p)
                raise UserError(
                    f"{folder / file} is missing: {folder} should hold {expected}"
                    " (torchvision's layout); download the dataset again"
                )
    if name == "tinyimagenet":
        from lifelong.data.tiny_imagenet import read_tiny_imagenet  # Pillow is imported on use

        return ImageDataset(name, *read_tiny_imagenet(folder, _TINY_SHAPE))
    n_classes = 10 if name == "cifar10" else 100
    key = "labels" if name == "cifar10" else "fine_labels"
    train = [_read_batch(folder / f, key, n_classes) for f in _FILES[name][0]]
    test = [_read_batch(folder / f, key, n_classes) for f in _FILES[name][1]]
    x_train, y_train = torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train])
    x_test, y_test = torch.cat([b[0] for b in test]), torch.cat([b[1] for b in test])
    coarse = train[0][2]
    superclasses = None if coarse is None else _superclasses(folder / "train", y_train, coarse)
    return ImageDataset(name, x_train, y_train, x_test, y_test, n_classes, superclasses)


def _read_batch(
    path: Path, key: str, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pickled CIFAR batch: ``data`` uint8 ``[N, 3072]`` as ``[N, 3, 32, 32]``, its
    labels ``[N]`` (under ``key``) and, for CIFAR-100, its coarse labels ``[N]``."""
    entry = _unpickled(path)
    data, labels = (_entry(entry, path, k) for k in ("data", key))
    expected = "expected 3072 uint8 values per image (3x32x32, CIFAR's size)"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        kind = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: its 'data' is {kind}, {expected}; replace the file")
    if data.shape[1] != 3072:
        raise UserError(
            f"{path}: its images hold {data.shape[1]} values each, {expected}; replace the file"
        )
    y = _labels(labels, path, key, len(data), n_classes)
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *_CIFAR_SHAPE).copy())
    coarse = None
    if key == "fine_labels":
        coarse = _labels(_entry(entry, path, "coarse_labels"), path, "coarse_labels", len(y), 20)
    return x, y, coarse


def _labels(labels: Any, path: Path, key: str, n: int, n_classes: int) -> torch.Tensor:
    """``labels`` as int64 ``[n]``, refused unless there are ``n`` in ``0..n_classes-1``."""
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.full(0, -1, dtype=np.int64)
    if y.shape != (n,) or (n and (y.min() < 0 or y.max() >= n_classes)):
        raise UserError(
            f"{path}: '{key}' should be {n} labels in 0..{n_classes - 1} (one per image);"
            " replace the file"
        )
    return torch.from_numpy(y)


def _superclasses(path: Path, fine: torch.Tensor, coarse: torch.Tensor) -> tuple[int, ...]:
    """CIFAR-100's coarse label of each fine class, from the training batch ``path``'s
    fine and coarse labels (both ``[N]``, checked)."""
    of = torch.full((100,), -1, dtype=torch.long)
    of[fine] = coarse
    if (of < 0).any() or not torch.equal(of[fine], coarse):
        raise UserError(
            f"{path}: every fine class needs exactly one coarse label (CIFAR-100 has 20"
            " superclasses of 5 classes each); replace the file"
        )
    return tuple(of.tolist())


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists and strings, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3, protocol 2
            return super().find_class(module, name)
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "ndarray",
            "dtype",
            "scalar",
        ):
            return _numpy_name(name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never does")


def _numpy_name(name: str) -> Any:
    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # numpy 2
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return getattr(multiarray, name)


def _unpickled(path: Path) -> dict[str, Any]:
    """A CIFAR batch file's dict, keys as str (Python 2's pickles give str with latin1;
    others may hold bytes keys)."""
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e}): check its permissions") from e
    except Exception as e:  # any failure of the unpickler means a bad file
        raise UserError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}): expected a pickled"
            " CIFAR batch (torchvision's layout); download the dataset again"
        ) from e
    if not isinstance(entry, dict):
        raise UserError(
            f"{path} holds a {type(entry).__name__}, expected a pickled CIFAR batch (a dict);"
            " download the dataset again"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in entry.items()}


def _entry(entry: dict[str, Any], path: Path, key: str) -> Any:
    if key not in entry:
        raise UserError(
            f"{path} holds no '{key}' (it has {', '.join(sorted(entry)) or 'nothing'}):"
            " expected a CIFAR batch; download the dataset again"
        )
    return entry[key]


def files_digest(paths: list[Path]) -> str:
    """A digest of the names, sizes and modification times of ``paths`` (a cache key)."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cached_arrays(name: str, key: str) -> dict[str, np.ndarray] | None:
    """Arrays kept by :func:`keep_arrays` under ``name`` and ``key``; None when absent or
    unreadable (then they are decoded again)."""
    path = cache_home() / "data" / f"{name}-{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError):
        return None


def keep_arrays(name: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the cache atomically; a cache that cannot be written is ignored."""
    path = cache_home() / "data" / f"{name}-{key}.npz"
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **
        os.replace(partial, path)
    except OSError:
        pass
    finally:  # an interrupted write leaves no partial file behind
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
