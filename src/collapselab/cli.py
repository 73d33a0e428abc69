"""The ``collapselab`` command: run, resume, report, list and show experiments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from collapselab.errors import ChainError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate, measure and fend off model collapse in self-consuming training.")
err_console = Console(stderr=True)


def _out() -> Console:
    """stdout console; wide when piped so tables do not fold into narrow columns."""
    return Console(width=None if sys.stdout.isatty() else 220)

Workers = Annotated[int, typer.Option("--workers", "-w", min=1,
                                      help="worker processes (chain batches run in parallel)")]


def _progress_run(exp, run_dir: Path, workers: int, quiet: bool):
    from collapselab.runs import assemble, execute, finish

    total = len(exp.arms) * exp.n_batches * (exp.generations + 1)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("generations"), TimeElapsedColumn(), console=err_console,
                  disable=quiet, transient=False) as bar:
        task = bar.add_task(f"{exp.name}: {len(exp.arms)} arms x {exp.seeds} seeds", total=total)
        results = execute(exp, run_dir, workers, lambda arm, batch, g: bar.advance(task))
    return finish(exp, run_dir, assemble(exp, results))


def _show_result(exp, summary, run_dir: Path) -> None:
    from collapselab.report import rich_table

    _out().print(rich_table(exp, summary))
    _out().print(f"report: {run_dir / 'report.html'}  metrics: {run_dir / 'metrics.csv'}")


@app.command()
def run(
    experiment: Annotated[str, typer.Argument(help="built-in experiment name or path to a YAML file")] = "quickstart",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<name>)")] = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (chains per arm)")] = None,
    generations: Annotated[int | None, typer.Option(help="last generation")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a setting: key.path=value")] = None,
    workers: Workers = 1,
    overwrite: Annotated[bool, typer.Option(help="replace an existing run directory")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run an experiment and write its run directory (checkpoints, metrics.csv, summary.json, report.html)."""
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run

    exp = load_experiment(experiment, set_, seeds, generations)
    run_dir = create_run(exp, out or Path("runs") / exp.name, overwrite)
    summary = _progress_run(exp, run_dir, workers, quiet)
    _show_result(exp, summary, run_dir)


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(help="run directory")], workers: Workers = 1,
           quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False) -> None:
    """Continue a killed run from its last checkpoint (the results equal an uninterrupted run)."""
    from collapselab.runs import open_run

    exp = open_run(run_dir)
    _show_result(exp, _progress_run(exp, run_dir, workers, quiet), run_dir)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="run directory")]) -> None:
    """Rebuild summary.json, figures and report.html from a finished run's metrics.csv."""
    from collapselab.report import write_report
    from collapselab.runs import open_run, read_metrics_csv

    exp = open_run(run_dir)
    if not (run_dir / "metrics.csv").is_file():
        raise ConfigError(f"{run_dir}: no metrics.csv yet (finish it with `collapselab resume {run_dir}`)")
    _show_result(exp, write_report(exp, read_metrics_csv(run_dir / "metrics.csv", exp), run_dir), run_dir)


@app.command("list")
def list_() -> None:
    """List the built-in experiments."""
    from rich.table import Table

    from collapselab.experiments import catalog_names, load_experiment

    t = Table("name", "description", box=None)
    for name in catalog_names():
        t.add_row(name, load_experiment(name).description.split(". ")[0].strip())
    _out().print(t)


@app.command()
def show(experiment: Annotated[str, typer.Argument(help="built-in name or YAML file")],
         resolved: Annotated[bool, typer.Option(help="print the fully resolved experiment")] = False) -> None:
    """Print an experiment's YAML."""
    from collapselab.experiments import catalog_names, catalog_text, dump_experiment, load_experiment

    exp = load_experiment(experiment)
    if resolved:
        text = dump_experiment(exp)
    elif experiment in catalog_names():
        text = catalog_text(experiment)
    else:
        text = Path(experiment).read_text(encoding="utf-8")
    sys.stdout.write(text)


def _fail(msg: str, code: int) -> None:
    err_console.print(f"collapselab: error: {msg}", markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit 2 for bad input, 1 for a failed chain."""
    try:
        code = app(args=argv, standalone_mode=False, prog_name="collapselab")
    except typer.TyperException as e:  # usage errors of typer's bundled click
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(e.format_message() + "\n")
            raise SystemExit(0) from None
        _fail(" ".join(e.format_message().split()), getattr(e, "exit_code", 2))
    except typer.Abort:
        _fail("interrupted", 130)
    except KeyboardInterrupt:
        _fail("interrupted; continue with `collapselab resume <run directory>`", 130)
    except ConfigError as e:
        _fail(str(e), 2)
    except ChainError as e:
        _fail(f"{e} (finished generations are kept; see the run directory)", 1)
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
