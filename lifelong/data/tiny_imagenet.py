"""TinyImageNet's folder tree (``tiny-imagenet-200/``) decoded into uint8 tensors.

Layout (as Stanford's zip unpacks): ``wnids.txt`` (one class id a line),
``train/<wnid>/images/*.JPEG`` (500 a class) and ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (file, wnid, box; 50 a class), all 64x64. The validation
images are the test split (the test folder has no labels). Classes are numbered in the
sorted order of their wnids. Decoding the 110,000 JPEGs takes a minute or two; the result
is kept in the cache and loads in about a second afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lifelong.errors import UserError

__all__ = ["read_tiny_imagenet"]

_EXTENSIONS = (".jpeg", ".jpg")


def read_tiny_imagenet(
    folder: Path, shape: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Train and validation images of the tree at ``folder``.

    Args:
        shape: the ``(3, H, W)`` every image must have.

    Returns:
        ``(x_train [N, 3, H, W] uint8, y_train [N], x_val [M, 3, H, W], y_val [M], classes)``.

    Raises:
        UserError: naming the file that is missing, unreadable or of another size.
    """
    from lifelong.data.images import cached_arrays, files_digest, keep_arrays

    wnids = _wnids(folder / "wnids.txt")
    train = _train_files(folder / "train", wnids)
    val = _val_files(folder / "val", wnids)
    files = [folder / "wnids.txt", folder / "val" / "val_annotations.txt"]
    key = files_digest(files + [p for p, _ in train] + [p for p, _ in val])
    arrays = cached_arrays("tinyimagenet", key)
    if arrays is None:
        arrays = {}
        arrays["x_train"], arrays["y_train"] = _decoded(train, shape)
        arrays["x_test"], arrays["y_test"] = _decoded(val, shape)
        keep_arrays("tinyimagenet", key, arrays)
    tensors = [torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    return tensors[0], tensors[1], tensors[2], tensors[3], len(wnids)


def _wnids(path: Path) -> list[str]:
    """The sorted class ids listed in ``wnids.txt``."""
    try:
        wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}): download TinyImageNet again") from e
    if len(wnids) < 2:
        raise UserError(f"{path} lists {len(wnids)} class ids, expected one a line (200)")
    return wnids


def _train_files(train: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """Every training JPEG with its class, class by class, files sorted by name."""
    found = []
    for label, wnid in enumerate(wnids):
        images = train / wnid / "images"
        if not images.is_dir():
            raise UserError(
                f"{images} is missing: TinyImageNet's train/ holds <wnid>/images/*.JPEG for"
                f" every class of wnids.txt; download the dataset again"
            )
        names = sorted(p for p in images.iterdir() if p.suffix.lower() in _EXTENSIONS)
        if not names:
            raise UserError(f"{images} holds no .JPEG files, expected the class's images")
        found += [(p, label) for p in names]
    return found


def _val_files(val: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """Every validation JPEG named in ``val_annotations.txt``, with its class."""
    notes = val / "val_annotations.txt"
    labels = {wnid: i for i, wnid in enumerate(wnids)}
    found = []
    try:
        lines = notes.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {notes} ({e}): download TinyImageNet again") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in labels:
            raise UserError(
                f"{notes} line {number}: expected 'file<TAB>wnid<TAB>box' with a wnid of"
                f" wnids.txt, got {line[:60]!r}; download TinyImageNet again"
            )
        image = val / "images" / fields[0]
        if not image.is_file():
            raise UserError(f"{image} is missing: {notes} line {number} names it")
        found.append((image, labels[fields[1]]))
    if not found:
        raise UserError(f"{notes} names no images, expected one line per validation image")
    return found


def _decoded(
    files: list[tuple[Path, int]], shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``files`` as uint8 ``[N, 3, H, W]`` and their labels ``[N]``;
    grey-scale images (TinyImageNet has some) become RGB, as torchvision's loader does."""
    from PIL import Image, UnidentifiedImageError

    x = np.empty((len(files), *shape), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise UserError(
                f"{path} is not a readable JPEG ({e}): replace it (download TinyImageNet again)"
            ) from e
        if rgb.shape != (shape[1], shape[2], 3):
            raise UserError(
                f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, expected {shape[2]}x{shape[1]}"
                " (TinyImageNet's size): replace it"
            )
        x[i] = rgb.transpose(2, 0, 1)
    return x, np.array([label for _, label in files], dtype=np.int64)
