"""The command line: the main job, listing, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong.cli import EXIT_UNFINISHED, main

SMALL = ["--set", "samples_per_task=120", "--set", "eval_every=0"]


def test_run_prints_matrix_and_metrics_and_writes_results(tmp_path: Path, capsys) -> None:
    out = tmp_path / "res"
    code = main(
        [
            "run",
            "split-mnist",
            "-s",
            "naive",
            "-s",
            "joint",
            "--seeds",
            "0,1",
            "--out",
            str(out),
            "-j",
            "1",
            *SMALL,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "init (b)" in printed and "after 8/9" in printed
    for column in ("acc", "bwt", "fwt", "forgetting", "la"):
        assert column in printed
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [(r["strategy"], r["seed"]) for r in runs] == [
        ("naive", 0),
        ("naive", 1),
        ("joint", 0),
        ("joint", 1),
    ]
    assert all(0 <= v <= 1 for r in runs for row in r["matrix"] for v in row)
    assert (out / "results.csv").read_text().startswith("strategy,seed,scenario,point")


def test_rerun_skips_completed_runs_and_gives_identical_numbers(tmp_path: Path, capsys) -> None:
    args = ["run", "split-mnist", "-s", "naive", "--out", str(tmp_path), *SMALL]
    assert main(args) == 0
    first = (tmp_path / "summary.json").read_text()
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == first
    fresh = tmp_path / "again"
    assert main(["run", "split-mnist", "-s", "naive", "--out", str(fresh), *SMALL]) == 0
    assert _without_times((fresh / "summary.json").read_text()) == _without_times(first)


def _without_times(summary: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in json.loads(summary)["runs"]]


def test_list_shows_scenarios_strategies_and_parameters(capsys) -> None:
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name in (
        "split-mnist",
        "permuted-mnist",
        "rotated-mnist",
        "naive",
        "joint",
        "samples_per_task",
        "eval_every",
        "glances",
        "lr",
    ):
        assert name in printed


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("er+ewc", ["er+ewc = sgd+replay+ewc", "lam", "fisher_samples", "size"]),
        ("la-maml", ["la-maml = la-maml+replay", "opt_lr", "alpha_init", "size"]),
        ("oml+er", ["oml+er = oml+sgd+replay", "meta_steps", "reset_head"]),
    ],
)
def test_list_describes_a_composition_part_by_part(spec, expected, capsys) -> None:
    assert main(["list", "--strategy", spec]) == 0
    printed = capsys.readouterr().out
    for fragment in expected:
        assert fragment in printed


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "split-mnst", "-s", "naive"], "did you mean 'split-mnist'"),
        (["run", "split-mnist", "-s", "naiv"], "did you mean 'naive'"),
        (["run", "split-mnist"], "no strategy given"),
        (["run", "split-mnist", "-s", "naive", "--set", "lrr=0.1"], "did you mean 'lr'"),
        (["run", "split-mnist", "-s", "naive", "--set", "lr=-1"], "greater than 0"),
        (["run", "split-mnist", "-s", "naive", "--set", "lr=fast"], "not a valid float"),
        (["run", "split-mnist", "-s", "ewc", "--set", "ewc.lam=inf"], "not a valid float"),
        (["run", "split-mnist", "-s", "ewc", "--set", "ewc.lam=1e400"], "not a valid float"),
        (["run", "split-mnist", "-s", "naive", "--set", "n_tasks=0"], "at least 1"),
        (["run", "split-mnist", "-s", "naive", "--set", "n_tasks=20"], "more than the 10"),
        (["run", "split-mnist", "-s", "naive", "--set", "samples_per_task=99999"], "only 800"),
        (["run", "split-mnist", "-s", "naive", "--set", "lr"], "not key=value"),
        (["run", "split-mnist", "-s", "naive", "--seeds", "a-b"], "--seeds"),
        (["run", "split-mnist", "-s", "naive", "--set", "dataset=mnist"], "--data-dir"),
        (
            [
                "run",
                "split-mnist",
                "-s",
                "naive",
                "--set",
                "dataset=mnist",
                "--data-dir",
                "/nonexistent/dir",
            ],
            "/nonexistent/dir",
        ),
        (["run", "split-mnist", "-s", "nope.py:Mine"], "does not exist"),
        (["run", "split-mnist", "-s", "naive", "--device", "tpu"], "unknown device"),
        (["run", "split-mnist", "-s", "naive", "--device", "meta"], "runs on cpu or cuda"),
        (["run", "split-mnist", "-s", "naive", "--seeds", "1-1000000000"], "at most 10,000"),
        (["run", "split-mnist", "-s", "naive", "--address", "h:6379"], "add --executor ray"),
        (
            ["run", "split-mnist", "-s", "naive", "-s", "oml", "--set", "oml.pln_layers=5"],
            "pln_layers must be at most 2",  # checked before naive's run, not after it
        ),
        (
            ["run", "split-mnist", "-s", "naive", "-s", "maml", "--set", "maml.source=mnist5k"],
            "source 'mnist5k' of the meta-learned init holds the classes",
        ),
        (["frobnicate"], "invalid choice"),
        (["run", "split-mnist", "-s", "naive", "--bogus"], "(see `lifelong run --help`)"),
        (["bench", "--bogus"], "(see `lifelong bench --help`)"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    args: list[str], fragment: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    with_out = [*args, "--out", str(out)] if args[0] == "run" and len(args) > 2 else args
    try:
        code = main(with_out)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_suite_path_that_is_a_directory_says_so(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "grid.toml"
    folder.mkdir()
    assert main(["sweep", str(folder)]) == 2
    assert "is a directory; give the path of a .toml file" in capsys.readouterr().err


def test_a_summary_that_is_a_directory_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "summary.json").mkdir()
    assert main(["run", "split-mnist", "-s", "naive", *SMALL, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "summary.json is not a file" in err[0]


def test_empty_out_is_refused(capsys, tmp_path: Path) -> None:
    assert main(["report", str(tmp_path), "--out", ""]) == 2
    capsys.readouterr()
    assert main(["run", "split-mnist", "-s", "naive", "--out", ""]) == 2
    assert (
        capsys.readouterr().err.strip() == "lifelong: error: --out is empty; give a directory path"
    )


def test_options_that_do_nothing_here_say_so(tmp_path: Path, capsys) -> None:
    args = ["run", "split-mnist", "-s", "naive", *SMALL]
    assert main([*args, "--download", "--vectorize", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "note: --download: mnist5k needs no download" in err
    assert "--jobs has no effect" not in err  # --vectorize splits the seeds over --jobs
    out = tmp_path / "out"
    assert main([*args, "--set", "lr=1e30", "--out", str(out), "--report"]) == EXIT_UNFINISHED
    assert "report: not written, since no run completed" in capsys.readouterr().err
    assert not (out / "report").exists()


def test_exit_status_says_whether_every_run_completed(tmp_path: Path, capsys) -> None:
    args = ["run", "split-mnist", "-s", "naive", "--seeds", "0,1", *SMALL, "--quiet", "-j", "1"]
    assert main([*args, "--set", "samples_per_task=400"]) == 0
    assert "warning" not in capsys.readouterr().err  # it learns every task
    assert main([*args, "--set", "lr=1e6"]) == EXIT_UNFINISHED == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[1] for line in err] == [
        " naive seed 0 diverged",
        " naive seed 1 diverged",
    ]


def test_a_run_that_learns_nothing_is_a_warning(capsys) -> None:
    args = ["run", "split-mnist", "-s", "naive", *SMALL, "--quiet", "--set", "lr=1e-9"]
    assert main(args) == 0  # completed, yet learned nothing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lifelong: warning: naive seed 0 did not learn:")
    assert "4 of 5 tasks near chance right after training" in err[0]
    assert "chance is 0.100" in err[0]  # class-IL: the head chooses among 10 digits
    assert main([*args, "--set", "setting=task"]) == 0
    assert "chance is 0.500" in capsys.readouterr().err  # task-IL: each head holds 2 digits


def test_a_data_dir_that_no_run_reads_is_a_warning(tmp_path: Path, capsys) -> None:
    args = ["run", "split-mnist", "-s", "naive", *SMALL, "--set", "n_tasks=2", "--quiet"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "--data-dir" in line]
    assert len(err) == 1 and err[0].startswith(f"lifelong: warning: --data-dir {tmp_path} is not")
    assert "mnist5k" in err[0] and "--set dataset=mnist" in err[0]
    write_fake_mnist(tmp_path)
    assert main([*args, "--set", "dataset=mnist", "--data-dir", str(tmp_path)]) == 0
    assert "--data-dir" not in capsys.readouterr().err


def write_fake_mnist(directory: Path) -> None:
    """The four IDX files of a 10-class data set with 40 train and 20 test images per class."""
    from lifelong.data.mnist import IDX_FILES, write_idx

    g = torch.Generator().manual_seed(0)
    for (images, labels), n in zip((IDX_FILES[:2], IDX_FILES[2:]), (400, 200), strict=True):
        write_idx(directory / images, torch.randint(0, 256, (n, 28, 28), generator=g).byte())
        write_idx(directory / labels, (torch.arange(n) % 10).byte())


def test_out_is_checked_before_any_download(tmp_path: Path, capsys, monkeypatch) -> None:
    import lifelong.data.mnist

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded before --out was checked")

    monkeypatch.setattr(lifelong.data.mnist, "load_dataset", must_not_run)
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    args = ["run", "split-mnist", "-s", "naive", "--set", "dataset=mnist", "--download"]
    assert main([*args, "--data-dir", str(tmp_path), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["run", "split-mnist", "-s", "naive", "--out", str(target), *SMALL]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_plugin_that_breaks_the_contract_is_rejected(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.py"
    path.write_text("from lifelong import Strategy\n\nclass Broken(Strategy):\n    name = 'b'\n")
    assert main(["run", "split-mnist", "-s", f"{path}:Broken"]) == 2
    assert "does not implement predict, setup, train_step" in capsys.readouterr().err
    path.write_text("import nothing_here_at_all\n")
    assert main(["run", "split-mnist", "-s", f"{path}:Broken"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1" in err and "nothing_here_at_all" in err


def test_installed_command_has_no_traceback_on_user_error() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lifelong.cli",
            "run",
            "split-mnist",
            "-s",
            "naive",
            "--set",
            "bogus=1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lifelong: error: --set bogus")


def test_metrics_table_keeps_a_suites_setups_apart(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "two.toml"
    suite.write_text(
        '[suite]\ndescription = "two settings"\nscenarios = ["split-mnist"]\n'
        'strategies = ["naive"]\nseeds = [0]\n\n[settings]\nsamples_per_task = 32\n\n'
        '[grid]\nsetting = ["class", "task"]\n'
    )
    assert main(["run", str(suite), "-j", "1"]) == 0
    table = capsys.readouterr().out.split("strategy")[-1]
    assert "naive (setting=class)" in table and "naive (setting=task)" in table


def test_the_cli_table_and_the_report_show_the_same_spread(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["run", "split-mnist", "-s", "naive", "--seeds", "0,1", *SMALL, "--jobs", "1"]
    assert main([*args, "--set", "samples_per_task=400", "--out", str(out), "--report"]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("strategy"))
    cells = printed[header + 1].split()[2:]  # naive, 2 seeds, then "mean ± half" x 5
    cli = [" ".join(cells[i : i + 3]) for i in range(0, len(cells), 3)]
    assert printed[header + 2].startswith("mean ± 95% CI over seeds (t distribution")
    text = (out / "report" / "report.md").read_text()
    row = text.split("## Metrics\n\n", 1)[1].splitlines()[2]
    assert [c.strip() for c in row.strip("|").split("|")][2:7] == cli
    assert "Mean ± 95% CI over seeds (t distribution" in text
    assert (
        main(
            [
                *args,
                "--set",
                "samples_per_task=400",
                "--out",
                str(out),
                "--report",
                "--band",
                "se",
                "-q",
            ]
        )
        == 0
    )
    assert "Mean ± standard error over seeds" in (out / "report" / "report.md").read_text()


def test_list_shows_the_values_a_string_option_takes(capsys) -> None:
    assert main(["list", "--strategy", "ewc"]) == 0
    (fisher,) = [line for line in capsys.readouterr().out.splitlines() if "fisher " in line]
    assert "str: empirical|true" in fisher
    assert main(["list", "scenarios"]) == 0
    assert "str: class|domain|task" in capsys.readouterr().out
