"""Tests for lifelong.data.mnist: IDX round trips, directory layouts, errors, and the mnist5k split."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest
import torch

from lifelong.data import mnist as data
from lifelong.data.mnist import (
    DEBIAN_FASHION_MNIST_DIR,
    IDX_FILES,
    load_dataset,
    read_idx,
    write_idx,
)
from lifelong.errors import UserError


def _fake_mnist(directory: Path, ext: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write 20 train / 10 test random images and labels as the four IDX files."""
    g = torch.Generator().manual_seed(seed)
    tensors = {
        IDX_FILES[0]: torch.randint(0, 256, (20, 28, 28), generator=g, dtype=torch.uint8),
        IDX_FILES[1]: torch.randint(0, 10, (20,), generator=g, dtype=torch.uint8),
        IDX_FILES[2]: torch.randint(0, 256, (10, 28, 28), generator=g, dtype=torch.uint8),
        IDX_FILES[3]: torch.randint(0, 10, (10,), generator=g, dtype=torch.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, t in tensors.items():
        write_idx(directory / (stem + ext), t)
    return tensors


def _assert_matches(ds: data.Dataset, tensors: dict[str, torch.Tensor]) -> None:
    assert torch.equal(ds.x_train, tensors[IDX_FILES[0]])
    assert torch.equal(ds.y_train, tensors[IDX_FILES[1]].long())
    assert torch.equal(ds.x_test, tensors[IDX_FILES[2]])
    assert torch.equal(ds.y_test, tensors[IDX_FILES[3]].long())
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.n_classes == 10


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_idx_roundtrip(tmp_path: Path, name: str, shape: tuple[int, ...]) -> None:
    t = torch.randint(0, 256, shape, dtype=torch.uint8)
    write_idx(tmp_path / name, t)
    back = read_idx(tmp_path / name)
    assert back.dtype == torch.uint8 and back.shape == t.shape and torch.equal(back, t)


def test_write_idx_is_the_standard_format(tmp_path: Path) -> None:
    write_idx(tmp_path / "l.gz", torch.tensor([3, 1], dtype=torch.uint8))
    raw = gzip.decompress((tmp_path / "l.gz").read_bytes())
    assert raw == bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 1])


def test_write_idx_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="uint8"):
        write_idx(tmp_path / "f", torch.zeros(3))


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_load_mnist_from_dir(tmp_path: Path, ext: str) -> None:
    tensors = _fake_mnist(tmp_path, ext)
    _assert_matches(load_dataset("mnist", tmp_path), tensors)


def test_load_mnist_torchvision_layout(tmp_path: Path) -> None:
    tensors = _fake_mnist(tmp_path / "MNIST" / "raw", ".gz")
    _assert_matches(load_dataset("mnist", str(tmp_path)), tensors)


def test_cache_returns_same_object(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, "")
    (tmp_path / "sub").mkdir()
    first = load_dataset("mnist", tmp_path)
    assert load_dataset("mnist", str(tmp_path) + "/sub/..") is first
    assert data._load_uncached("mnist", tmp_path.resolve(), False) is not first


def test_bad_magic_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "x")


def test_wrong_dtype_code_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05")
    with pytest.raises(UserError, match="0x0d"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize("cut", [3, 6, 100])
def test_truncated_file_is_user_error(tmp_path: Path, cut: int) -> None:
    write_idx(tmp_path / "x", torch.zeros(2, 28, 28, dtype=torch.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:cut])
    with pytest.raises(UserError, match="replace it"):
        read_idx(tmp_path / "x")


def test_truncated_gzip_is_user_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "x.gz", torch.zeros(2, 28, 28, dtype=torch.uint8))
    (tmp_path / "x.gz").write_bytes((tmp_path / "x.gz").read_bytes()[:20])
    with pytest.raises(UserError, match=r"x\.gz"):
        read_idx(tmp_path / "x.gz")


def test_mismatched_counts_is_user_error(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, "")
    write_idx(tmp_path / IDX_FILES[1], torch.zeros(19, dtype=torch.uint8))
    with pytest.raises(UserError, match="20 images but 19 labels"):
        data._load_uncached("mnist", tmp_path, False)


def test_label_out_of_range_is_user_error(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, "")
    write_idx(tmp_path / IDX_FILES[3], torch.full((10,), 10, dtype=torch.uint8))
    with pytest.raises(UserError, match="label 10"):
        data._load_uncached("mnist", tmp_path, False)


def test_missing_files_names_directory(tmp_path: Path) -> None:
    (tmp_path / IDX_FILES[0]).write_bytes(b"")
    with pytest.raises(UserError, match="--download") as info:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path.resolve()) in str(info.value)


def test_mnist_without_data_dir() -> None:
    with pytest.raises(UserError, match="needs --data-dir"):
        load_dataset("mnist")


def test_download_without_torchvision_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = data.importlib.util.find_spec
    monkeypatch.setattr(
        data.importlib.util,
        "find_spec",
        lambda n: None if n == "torchvision" else real_find_spec(n),
    )
    with pytest.raises(UserError, match="pip install torchvision"):
        load_dataset("mnist", tmp_path, download=True)


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, mnist: type) -> None:
    """Make ``import torchvision.datasets`` give a module whose ``MNIST`` is ``mnist``."""
    import importlib.machinery
    import types

    vision = types.ModuleType("torchvision")
    vision.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    datasets = types.ModuleType("torchvision.datasets")
    datasets.MNIST = type("MNIST", (mnist,), {})  # type: ignore[attr-defined]
    vision.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


class OfflineMNIST:  # torchvision's behaviour offline: folders made, then a multi-line error
    def __init__(self, root: str, download: bool) -> None:
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
            "<urlopen error [Errno -2] Name or service not known>\n"
        )


class OnlineMNIST:  # torchvision's behaviour online: the four files in root/MNIST/raw
    def __init__(self, root: str, download: bool) -> None:
        assert Path(root).is_dir()  # torchvision needs the root to exist
        _fake_mnist(Path(root) / "MNIST" / "raw", ".gz", seed=3)


@pytest.mark.parametrize("missing", [False, True])
def test_failed_download_is_one_line_and_leaves_no_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: bool
) -> None:
    fake_torchvision(monkeypatch, OfflineMNIST)
    root = tmp_path / "new" / "data" if missing else tmp_path
    with pytest.raises(UserError) as info:
        load_dataset("mnist", root, download=True)
    message = str(info.value)
    assert "\n" not in message and "Name or service not known" in message
    assert message.startswith(f"downloading 'mnist' into {root.resolve()} failed")
    assert list(tmp_path.iterdir()) == []


def test_download_creates_a_data_dir_that_does_not_exist_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_torchvision(monkeypatch, OnlineMNIST)
    root = tmp_path / "new" / "mnist"
    dataset = load_dataset("mnist", root, download=True)
    assert (root / "MNIST" / "raw" / (IDX_FILES[0] + ".gz")).is_file()
    assert dataset.x_train.shape == (20, 28, 28)


def test_cli_download_into_a_missing_data_dir_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lifelong.cli import main

    fake_torchvision(monkeypatch, OnlineMNIST)
    root = tmp_path / "mnist"
    args = ["run", "split-mnist", "-s", "naive", "--set", "dataset=mnist", "--set", "n_tasks=2"]
    assert main([*args, "--download", "--data-dir", str(root), "--quiet"]) == 0, capsys.readouterr()
    assert (root / "MNIST" / "raw").is_dir()


@pytest.mark.parametrize("which", ["missing", "file"])
def test_bad_data_dir_is_user_error(tmp_path: Path, which: str) -> None:
    path = tmp_path / "nope"
    if which == "file":
        path.write_text("")
    with pytest.raises(UserError, match="nope"):
        load_dataset("mnist", path)


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(UserError, match="did you mean 'mnist'") as info:
        load_dataset("mnits")
    assert "fashion-mnist" in str(info.value)


def test_mnist5k_split() -> None:
    ds = data._load_uncached("mnist5k", None, False)
    assert ds.x_train.shape == (4000, 28, 28) and ds.x_test.shape == (1000, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and int(ds.x_train.max()) > 200
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 100))
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 400))
    assert not torch.equal(ds.y_train[:50], torch.sort(ds.y_train[:50]).values)  # shuffled


def test_mnist5k_split_indices_disjoint_and_stratified() -> None:
    labels = torch.arange(10).repeat_interleave(torch.tensor([500, 490] + [510] * 8)).numpy()
    train_idx, test_idx = data._split_mnist5k(labels)
    assert len(set(train_idx.tolist()) & set(test_idx.tolist())) == 0
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(len(labels)))
    assert torch.bincount(torch.from_numpy(labels)[test_idx]).tolist() == [100, 98] + [102] * 8


def test_mnist5k_deterministic_and_cached() -> None:
    a = data._load_uncached("mnist5k", None, False)
    b = data._load_uncached("mnist5k", None, False)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    torch.manual_seed(123)  # the split must not follow the global seed
    c = load_dataset("mnist5k")
    assert torch.equal(c.x_test, a.x_test) and load_dataset("mnist5k") is c


def test_fashion_mnist_from_debian() -> None:
    if not os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
        pytest.skip(
            f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST_DIR}"
            " is absent; apt-get install dataset-fashion-mnist)"
        )
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.y_train.shape == (60000,) and torch.bincount(ds.y_test).tolist() == [1000] * 10


def test_fashion_mnist_prefers_data_dir(tmp_path: Path) -> None:
    tensors = _fake_mnist(tmp_path / "FashionMNIST" / "raw", "")
    _assert_matches(load_dataset("fashion-mnist", tmp_path), tensors)


def test_fashion_mnist_missing_mentions_apt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)


def test_mnist5k_is_parsed_once_then_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    first = data._load_uncached("mnist5k", None, False)
    (copy,) = (tmp_path / "data").glob("mnist_5k.csv.gz-*.npy")

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(data.np, "loadtxt", no_parsing)
    again = data._load_uncached("mnist5k", None, False)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
    monkeypatch.undo()
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path))
    copy.write_bytes(b"not an array")  # a damaged copy is parsed anew and replaced
    repaired = data._load_uncached("mnist5k", None, False)
    assert torch.equal(repaired.x_train, first.x_train)
    assert not list((tmp_path / "data").glob("*.partial"))


def _centre_of_mass(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.float()
    index = torch.arange(x.shape[-1], dtype=torch.float32)
    mass = x.sum((1, 2))
    return (x.sum(2) * index).sum(1) / mass, (x.sum(1) * index).sum(1) / mass


def test_uci_digits_are_in_mnist_format_and_centred() -> None:
    pytest.importorskip("sklearn", reason="the UCI digits ship with scikit-learn")
    images, labels = data.load_uci_digits()
    assert images.shape == (1797, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10)) and int(torch.bincount(labels).min()) >= 170
    assert int(images.max()) == 255 and int(images.min()) == 0
    rows, cols = _centre_of_mass(images)
    assert float((rows - 14).abs().max()) <= 1 and float((cols - 14).abs().max()) <= 1
    ink = images > 0  # every digit lies in a 20x20 box, as MNIST's
    assert int(ink.any(2).sum(1).max()) <= 20 and int(ink.any(1).sum(1).max()) <= 20
    assert int(ink.any(2).sum(1).min()) > 0
    assert data.load_uci_digits()[0] is images  # loaded once per process


def test_mnist_frame_puts_the_centre_of_mass_at_14_14() -> None:
    blob = torch.zeros(2, 8, 8)
    blob[0, 0:3, 5:8] = 255.0  # ink in the top right corner
    blob[1, 4:8, 0:2] = 16.0  # faint ink bottom left
    framed = data.mnist_frame(blob)
    assert framed.shape == (2, 28, 28) and framed.dtype == torch.uint8
    rows, cols = _centre_of_mass(framed)
    assert float((rows - 14).abs().max()) <= 0.5 and float((cols - 14).abs().max()) <= 0.5
    assert int(framed[0].max()) == 255


def test_uci_digits_without_scikit_learn_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data, "_UCI_CACHE", [])
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails: not installed
    with pytest.raises(UserError, match="pip install scikit-learn") as error:
        data.load_uci_digits()
    assert "\n" not in str(error.value)
