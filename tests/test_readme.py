"""The README's examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

import lifelong
from lifelong.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_plugin_strategy_runs_and_lists(tmp_path: Path, capsys) -> None:
    (plugin,) = [block for block in python_blocks() if block.startswith("# my_strategy.py")]
    path = tmp_path / "my_strategy.py"
    path.write_text(plugin)
    assert main(["list", "--strategy", f"{path}:LabelSmoothing"]) == 0
    assert "smoothing" in capsys.readouterr().out
    result = lifelong.run(
        "split-mnist",
        f"{path}:LabelSmoothing",
        device="cpu",
        settings={"setting": "task", "smooth.smoothing": 0.2},
    )
    assert result.config["strategy"]["smoothing"] == 0.2
    assert result.metrics["la"] > 0.8


def test_readme_quickstart_commands_use_the_documented_test_command() -> None:
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install "torch==2.13.0" -e ".[test]" && pytest' in text
    assert 'pip install -q "torch==2.13.0" -e ".[test]"' in ci and "\npytest\n" in ci


def test_readme_seeds_together_example_gives_every_seed_its_result() -> None:
    (block,) = [b for b in python_blocks() if b.startswith("# seeds_together.py")]
    scope: dict = {}
    exec(block, scope)
    assert [r.seed for r in scope["results"]] == list(range(8))
    assert all(r.device == "cpu (vectorized x8)" and r.strategy == "er" for r in scope["results"])


def test_readme_error_example_is_the_real_output(capsys) -> None:
    """The README shows the one-line error of ``lifelong run split-mnist -s naiv`` verbatim."""
    (example,) = re.findall(r"\$ lifelong run split-mnist -s naiv\n(.*)\n", README.read_text())
    assert main(["run", "split-mnist", "-s", "naiv"]) == 2
    assert capsys.readouterr().err.strip() == example


def test_readme_exit_statuses_are_the_clis() -> None:
    from lifelong.cli import EXIT_UNFINISHED

    table = README.read_text().split("Exit status of `lifelong run`", 1)[1].split("\n\n", 2)[1]
    codes = {int(line.split("|")[1]) for line in table.splitlines()[2:]}
    assert codes == {0, 1, 2, EXIT_UNFINISHED, 130}
