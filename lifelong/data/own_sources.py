"""Data from a map-style torch Dataset or a folder of images, as :class:`OwnData`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.data.own_data import OwnData, Part, Transform, checked, held_out
from lifelong.errors import UserError

__all__ = ["from_folder", "from_torch"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def from_torch(
    train: Any,
    test: Any = None,
    *,
    transforms: Sequence[Transform] = (),
    test_fraction: float = 0.2,
    name: str | None = None,
) -> OwnData:
    """Data from map-style ``torch.utils.data.Dataset`` s (torchvision's among them).

    Each item is ``(input, label)`` or ``(input, label, task_id)``; an input may be a
    tensor, an array or a PIL image (channels come first, as with ``ToTensor``). Give the
    dataset without normalising transforms: inputs must be uint8 or floats in [0, 1].

    Args:
        train: the training set; test: the test set (None: hold out ``test_fraction``).
    """
    label = name or type(train).__name__
    xs, ys, ts = _read_dataset(train, label, "train")
    if test is None:
        return held_out(label, xs, ys, ts, tuple(transforms), test_fraction)
    xt, yt, tt = _read_dataset(test, label, "test")
    return checked(label, (xs, ys, ts), (xt, yt, tt), tuple(transforms))


def from_folder(
    root: str | Path,
    *,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    test_fraction: float = 0.2,
) -> OwnData:
    """Images sorted into one sub-folder per class (``root/cat/1.png``, ``root/dog/7.png``).

    Labels are the folder names' positions in sorted order. With ``root/train`` and
    ``root/test`` both present, those are the splits; otherwise ``test_fraction`` of each
    class is held out.

    Args:
        size: ``(height, width)`` every image is resized to (None: as stored; all equal).
        mode: ``"L"`` (grey) or ``"RGB"`` to convert every image (None: as stored).
    """
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist or is not a directory")
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _class_dirs(path / "train")
        xs, ys = _read_images(path / "train", classes, size, mode)
        xt, yt = _read_images(path / "test", classes, size, mode)
        return checked(str(path), (xs, ys, None), (xt, yt, None), ())
    xs, ys = _read_images(path, _class_dirs(path), size, mode)
    return held_out(str(path), xs, ys, None, (), test_fraction)


def _read_dataset(dataset: Any, name: str, split: str) -> Part:
    """Every item of a map-style dataset as stacked tensors (inputs of one shape)."""
    if not (hasattr(type(dataset), "__getitem__") and hasattr(type(dataset), "__len__")):
        raise UserError(
            f"dataset {name}: the {split} set is a {type(dataset).__name__}, not a map-style "
            "torch Dataset (it needs __len__ and __getitem__)"
        )
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    ts: list[int | None] = []
    for i in range(len(dataset)):
        try:
            item = dataset[i]
            x, y = _pixels(item[0]), int(item[1])
            t = int(item[2]) if len(item) > 2 else None
        except Exception as error:  # the user's dataset: say which item, not a traceback
            raise UserError(
                f"dataset {name}: {split} item {i} cannot be read as (input, label) "
                f"({type(error).__name__}: {error})"
            ) from None
        if xs and x.shape != xs[0].shape:
            raise UserError(
                f"dataset {name}: {split} item {i} has shape {tuple(x.shape)} but item 0 "
                f"{tuple(xs[0].shape)}; resize them to one shape (e.g. a Resize transform)"
            )
        xs.append(x)
        ys.append(y)
        ts.append(t)
    if not xs:
        raise UserError(f"dataset {name}: the {split} set is empty")
    tasks = None if ts[0] is None else torch.tensor(ts, dtype=torch.long)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long), tasks


def _pixels(x: Any) -> torch.Tensor:
    """A tensor from a tensor, an array or a PIL image (channels first, as ToTensor)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    array = np.asarray(x)
    tensor = torch.from_numpy(array.copy())
    return tensor.permute(2, 0, 1) if not isinstance(x, np.ndarray) and array.ndim == 3 else tensor


def _class_dirs(root: Path) -> list[Path]:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError(
            f"image folder {root} has no sub-folders; put each class's images in one "
            "(root/cat/1.png, root/dog/2.png, ...)"
        )
    return classes


def _read_images(
    root: Path, classes: list[Path], size: tuple[int, int] | None, mode: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for label, folder in enumerate(classes):
        where = root / folder.name
        for file in sorted(where.iterdir()) if where.is_dir() else ():
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as opened:
                    image = opened.convert(mode) if mode else opened
                    image = image.resize(size[::-1]) if size else image
                    x = _pixels(image)
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise UserError(f"image folder {root}: cannot read {file} ({error})") from None
            if xs and x.shape != xs[0].shape:
                raise UserError(
                    f"image folder {root}: {file} is {tuple(x.shape)} but the first image "
                    f"{tuple(xs[0].shape)}; pass size=(height, width) and mode='L' or 'RGB'"
                )
            xs.append(x)
            ys.append(label)
    if not xs:
        raise UserError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)
