"""The CLI tests' harness: typer's CliRunner keeps each invoke's output even after a library swapped
sys.stdout globally in an earlier invoke (colorama, through DVC; the guard is in conftest.py)."""

import colorama
import typer
from typer.testing import CliRunner

app = typer.Typer()


@app.command()
def first() -> None:
    colorama.init()  # what DVC's logger does when it is set up
    print("first")


@app.command()
def second() -> None:
    colorama.deinit()  # what dvc.ui.disable_colorama does around its output
    colorama.reinit()
    print("second")


def test_an_invoke_keeps_its_output_after_an_earlier_one_ran_colorama() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["first"]).output == "first\n"
    result = runner.invoke(app, ["second"])  # raised "I/O operation on closed file" without the guard
    assert result.exception is None and result.output == "second\n", result
