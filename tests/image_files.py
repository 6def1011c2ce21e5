"""Small datasets in the real on-disk layouts of CIFAR-10, CIFAR-100 and TinyImageNet,
with a learnable class signal (each class its own colour), for the loader tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def class_colours(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[N, 3, size, size]`` images: class k's colour plus noise (a class is
    told from another by its colour alone; a flip or a small shift keeps it)."""
    rng = np.random.default_rng(seed)
    k = labels.astype(np.float64)[:, None, None, None] % 10
    colour = np.concatenate([20 + 22 * k, 230 - 22 * k, 128 + 60 * (k % 2)], axis=1)
    noise = rng.normal(0, 30, (len(labels), 3, size, size))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def write_batch(path: Path, entry: dict[str, object], *, bytes_keys: bool) -> None:
    """A pickled CIFAR batch as the Python 2 originals hold it (protocol 2); with
    ``bytes_keys`` its keys are bytes, as Python 3's ``encoding="bytes"`` reads them."""
    entry = {"batch_label": "testing batch", **entry}
    keyed = {k.encode(): v for k, v in entry.items()} if bytes_keys else entry
    with open(path, "wb") as f:
        pickle.dump(keyed, f, protocol=2)


def write_cifar10(root: Path, per_class: int = 20, *, bytes_keys: bool = False) -> Path:
    """``root/cifar-10-batches-py`` with 5 training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        labels = np.repeat(np.arange(10), per_class)
        images = class_colours(labels, 32, seed=i).reshape(len(labels), -1)
        entry = {"data": images, "labels": labels.tolist()}
        write_batch(folder / name, entry, bytes_keys=bytes_keys)
    return folder


def write_cifar100(root: Path, per_class: int = 2, *, bytes_keys: bool = False) -> Path:
    """``root/cifar-100-python`` with train and test; fine class c is in superclass c % 20."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for i, name in enumerate(("train", "test")):
        fine = np.repeat(np.arange(100), per_class)
        images = class_colours(fine, 32, seed=i).reshape(len(fine), -1)
        entry = {
            "data": images,
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine % 20).tolist(),
        }
        write_batch(folder / name, entry, bytes_keys=bytes_keys)
    return folder


def write_tiny_imagenet(root: Path, n_classes: int = 4, per_class: int = 12) -> Path:
    """``root/tiny-imagenet-200``: wnids.txt, train/<wnid>/images/*.JPEG, val/images and
    val/val_annotations.txt, 64x64 JPEG files."""
    from PIL import Image

    folder = root / "tiny-imagenet-200"
    wnids = [f"n{1000 + 7 * k:08d}" for k in range(n_classes)]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # not sorted
    notes = []
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        pixels = class_colours(np.full(per_class + 3, k), 64, seed=k)
        for i in range(per_class):
            Image.fromarray(pixels[i].transpose(1, 2, 0)).save(images / f"{wnid}_{i}.JPEG")
        for i in range(3):
            name = f"val_{3 * k + i}.JPEG"
            Image.fromarray(pixels[per_class + i].transpose(1, 2, 0)).save(
                folder / "val" / "images" / name
            )
            notes.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return folder
