"""Bring your own data: arrays, torch Datasets and image folders as streams, checked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lifelong
from lifelong import UserError, from_arrays, from_folder, from_torch, scenario_from
from lifelong.cli import main


def blobs(n_classes: int = 6, per_class: int = 20, shape: tuple[int, ...] = (4, 4), seed: int = 0):
    """Separable float data in [0, 1]: each class its own centre."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    dim = int(np.prod(shape))
    x = np.clip(rng.random((n_classes, dim))[y] + 0.05 * rng.standard_normal((len(y), dim)), 0, 1)
    return x.reshape(len(y), *shape).astype(np.float32), y


def test_class_incremental_by_increment_maps_labels_to_global_classes() -> None:
    x, y = blobs()
    stream = scenario_from(from_arrays(x, y), increment=2).build(0)
    assert [t.classes for t in stream.tasks] == [(0, 1), (2, 3), (4, 5)]
    assert [t.targets for t in stream.tasks] == [(0, 1), (2, 3), (4, 5)]
    assert stream.n_outputs == 6 and stream.n_heads == 1 and stream.input_dim == 16
    assert stream.tasks[0].x_train.dtype == torch.uint8 and stream.tasks[0].x_train.shape[1] == 16
    held_out = sum(len(t.y_test) for t in stream.tasks)
    assert held_out == 6 * 4  # 20 % of each class


def test_explicit_class_order_sets_tasks_and_targets_and_drops_the_rest() -> None:
    x, y = blobs()
    y = y * 10  # labels need not be 0..C-1
    stream = scenario_from(from_arrays(x, y), increment=2, class_order=(50, 0, 30)).build(0)
    assert [t.classes for t in stream.tasks] == [(50, 0), (30,)]
    assert [t.targets for t in stream.tasks] == [(0, 1), (2,)]
    assert stream.n_outputs == 3
    assert set(stream.tasks[1].y_train.tolist()) == {2}


def test_task_incremental_gives_one_head_per_task_with_within_task_targets() -> None:
    x, y = blobs()
    stream = scenario_from(from_arrays(x, y), setting="task", increment=3).build(0)
    assert stream.n_heads == 2 and stream.n_outputs == 3
    assert [t.targets for t in stream.tasks] == [(0, 1, 2), (0, 1, 2)]


def test_domain_incremental_by_task_id_column() -> None:
    x, y = blobs(n_classes=2, per_class=40)
    task_ids = np.tile(np.arange(4), 20)  # four domains, both classes in each
    data = from_arrays(x, y, task_ids=task_ids)
    stream = scenario_from(data, setting="domain").build(0)
    assert stream.n_tasks == 4 and stream.n_outputs == 2
    assert all(t.classes == (0, 1) for t in stream.tasks)
    counts = [len(t.y_train) + len(t.y_test) for t in stream.tasks]
    assert counts == [20, 20, 20, 20]


def test_domain_incremental_by_a_transform_per_task() -> None:
    x, y = blobs(n_classes=2)
    data = from_arrays(x, y, transforms=(lambda b: b, lambda b: 1 - b, lambda b: b.flip(-1)))
    stream = scenario_from(data, setting="domain").build(0)
    assert stream.n_tasks == 3 and stream.n_outputs == 2
    first, inverted = stream.tasks[0].x_test.int(), stream.tasks[1].x_test.int()
    assert torch.equal(first + inverted, torch.full_like(first, 255))


def test_same_seed_same_stream_and_the_held_out_split_does_not_move() -> None:
    x, y = blobs()
    scenario = scenario_from(from_arrays(x, y), samples_per_task=20)
    a, b, c = scenario.build(3), scenario.build(3), scenario.build(4)
    for s, t in zip(a.tasks, b.tasks, strict=True):
        assert torch.equal(s.x_train, t.x_train) and torch.equal(s.x_test, t.x_test)
    assert any(not torch.equal(s.x_train, t.x_train) for s, t in zip(a.tasks, c.tasks, strict=True))
    assert all(torch.equal(s.x_test, t.x_test) for s, t in zip(a.tasks, c.tasks, strict=True))


def test_the_data_fingerprint_tells_data_apart_in_the_run_key() -> None:
    x, y = blobs()
    one, two = from_arrays(x, y), from_arrays(x[::-1].copy(), y)
    assert one.fingerprint == from_arrays(x, y).fingerprint != two.fingerprint
    assert scenario_from(one).dataset != scenario_from(two).dataset


def test_a_map_style_torch_dataset_with_pil_images() -> None:
    class Pictures(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 24

        def __getitem__(self, i: int):
            pixels = np.full((5, 6), 40 * (i % 4), dtype=np.uint8)
            return Image.fromarray(pixels), i % 4

    data = from_torch(Pictures(), test_fraction=0.25)
    assert data.shape == (5, 6) and data.labels == [0, 1, 2, 3]
    assert len(data.y_train) == 16 and len(data.y_test) == 8
    tensors = torch.utils.data.TensorDataset(torch.rand(10, 3, 2, 2), torch.arange(10) % 2)
    assert from_torch(tensors, tensors).shape == (3, 2, 2)


def write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> None:
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            Image.fromarray(np.full((h, w), 30 * i, dtype=np.uint8)).save(root / name / f"{i}.png")


def test_a_folder_of_images_by_class(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": [(6, 6)] * 5, "dog": [(6, 6)] * 5, "emu": [(6, 6)] * 5})
    (tmp_path / "notes.txt").write_text("not a class")
    data = from_folder(tmp_path)
    assert data.labels == [0, 1, 2] and data.shape == (6, 6)
    assert len(data.y_test) == 3 and len(data.y_train) == 12


def test_a_folder_with_train_and_test_splits_and_resizing(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", {"a": [(6, 6), (8, 8)], "b": [(6, 6)]})
    write_folder(tmp_path / "test", {"a": [(6, 6)], "b": [(9, 9)]})
    with pytest.raises(UserError, match="pass size=") as error:
        from_folder(tmp_path)
    assert "\n" not in str(error.value)
    data = from_folder(tmp_path, size=(4, 5))
    assert data.shape == (4, 5) and len(data.y_train) == 3 and len(data.y_test) == 2


def test_every_problem_is_one_line_and_all_are_reported_at_once() -> None:
    x, y = blobs()
    bad_y = y.copy()
    bad_y[0] = -3
    with pytest.raises(UserError) as error:
        from_arrays(x * 300, bad_y, x_test=x[:5, :2], y_test=y[:4])
    lines = str(error.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("dataset arrays: ") for line in lines)
    text = str(error.value)
    assert "scale it to [0, 1]" in text and "labels must be >= 0" in text
    assert "one label per sample: [5]" in text and "test inputs (2, 4)" in text


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((4, 2), np.float32), np.array([0.5, 1, 0, 1]), "whole numbers"),
        (np.zeros(4, np.float32), np.arange(4), "give \\[N, ...\\]"),
        (np.full((4, 2), np.nan, np.float32), np.arange(4), "NaN"),
        (np.zeros((4, 2), np.int64) + 256, np.arange(4), "0..255"),
        ("text", np.arange(4), "not an array"),
    ],
)
def test_bad_arrays_are_refused_in_one_line(x, y, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        from_arrays(x, y, x_test=np.zeros((2, 2), np.float32), y_test=np.arange(2))
    assert len(str(error.value).splitlines()) == 1


def test_a_class_order_naming_missing_labels_is_refused() -> None:
    x, y = blobs()
    with pytest.raises(UserError, match=r"labels \[9\] the data do not have"):
        scenario_from(from_arrays(x, y), class_order=(0, 9)).build(0)


def test_every_strategy_trains_on_own_data() -> None:
    x, y = blobs(per_class=10)
    scenario = scenario_from(from_arrays(x, y))
    for name in ("naive", "er+ewc"):
        result = lifelong.run(scenario, name, device="cpu", settings={"batch_size": 4})
        assert result.ok and len(result.matrix) == 3
        assert result.config["scenario"]["dataset"] == scenario.dataset


FACTORY = """
import numpy as np
import lifelong

def make_dataset():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = np.clip(rng.random((4, 9))[y] + 0.05 * rng.standard_normal((40, 9)), 0, 1)
    return lifelong.from_arrays(x.reshape(40, 3, 3).astype("float32"), y, name="tiny")

def as_tuple():
    data = make_dataset()
    return data.x_train.numpy(), data.y_train.numpy()

def raises():
    raise RuntimeError("disk on fire")

def wrong_type():
    return "a string"

def labels_out_of_range():
    return np.zeros((4, 2), np.float32), np.array([0, 1, -1, 2])

def mixed_shapes():
    import torch
    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 3
        def __getitem__(self, i):
            return torch.zeros(2, 2 + i), 0
    return lifelong.from_torch(Mixed())
"""


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    path = tmp_path / "my_data.py"
    path.write_text(FACTORY)
    return path


def test_cli_runs_own_data_from_a_factory_file(factory: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["run", "own-data", "--set", f"dataset={factory}:make_dataset", "-s", "naive"]
    assert main([*argv, "--set", "batch_size=4", "--out", str(out), "-q", "--jobs", "1"]) == 0
    (run,) = lifelong.evaluation.results_dir.load_runs(out)
    assert run.task_names == ["0/1", "2/3"] and run.config["scenario"]["increment"] == 2
    argv = ["run", "own-data", "--set", f"dataset={factory}:as_tuple", "-s", "naive"]
    assert main([*argv, "--set", "setting=task", "-q", "--jobs", "1"]) == 0


def test_a_suite_names_own_data(factory: Path, tmp_path: Path) -> None:
    suite = tmp_path / "mine.toml"
    suite.write_text(
        '# lifelong sweep mine.toml\n[suite]\ndescription = "own data"\n'
        'scenarios = ["own-data"]\nstrategies = ["naive"]\nseeds = [0]\n'
        f'[settings]\ndataset = "{factory}:make_dataset"\nbatch_size = 4\n'
        '[grid]\nsetting = ["class", "task"]\n'
    )
    out = tmp_path / "out"
    assert main(["sweep", str(suite), "--out", str(out), "-q", "--jobs", "1"]) == 0
    assert len(lifelong.evaluation.results_dir.load_runs(out)) == 2


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("raises", "raised RuntimeError: disk on fire at .*my_data.py:16"),
        ("wrong_type", "returned a str; return lifelong.from_arrays"),
        ("labels_out_of_range", "labels must be >= 0"),
        ("mixed_shapes", r"item 1 has shape \(2, 3\) but item 0 \(2, 2\)"),
        ("missing", "defines no function 'missing'"),
    ],
)
def test_a_bad_factory_is_one_line_exit_2_and_nothing_written(
    factory: Path, tmp_path: Path, capsys, function: str, message: str
) -> None:
    out = tmp_path / "out"
    argv = ["run", "own-data", "--set", f"dataset={factory}:{function}", "-s", "naive"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()


def test_a_bad_dataset_setting_names_the_form(tmp_path: Path, capsys) -> None:
    assert main(["run", "own-data", "-s", "naive"]) == 2
    assert "is not path/to/file.py:function" in capsys.readouterr().err
    assert main(["run", "own-data", "--set", "dataset=nowhere.py:f", "-s", "naive"]) == 2
    assert "dataset file nowhere.py does not exist" in capsys.readouterr().err


def test_a_factory_given_to_a_built_in_scenario_points_to_own_data(capsys) -> None:
    assert main(["run", "split-mnist", "--set", "dataset=my_data.py:make", "-s", "naive"]) == 2
    err = capsys.readouterr().err
    assert "lifelong run own-data --set dataset=my_data.py:make" in err and err.count("\n") == 1
