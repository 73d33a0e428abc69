"""The ``collapselab`` command: run, resume, report, list and show experiments; audit a causal LM.

Every failure a user can cause or meet prints one line ``collapselab: error: ...`` and exits with a
documented code: 2 for bad input (an experiment, an argument, a run directory that cannot be used), 1 for a
runtime fault (a chain's numerical failure, a full disk), 130 / 143 for Ctrl-C / SIGTERM. ``--debug`` shows
the traceback instead. Heavy modules (numpy, scipy, matplotlib, polars) are imported only by the commands
that need them, so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from collapselab.errors import ChainError, ConfigError, Interrupted, StoreError

# rich_markup_mode=None: click's plain help, which fits 80 columns and prints no `<bool>` beside flags
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Simulate, measure and fend off model collapse in self-consuming training.")
err_console = Console(stderr=True, highlight=False)
_state: dict = {"run_dir": None, "debug": False}

Workers = Annotated[int, typer.Option("--workers", "-w", min=1, metavar="N",
                                      help="worker processes (chain batches run in parallel; results do not "
                                           "depend on it)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
Backend = Annotated[str, typer.Option("--backend", metavar="NAME", help="local (in-process or --workers processes) "
                                                                       "or ray (a Ray instance; see --address)")]
Address = Annotated[str | None, typer.Option("--address", metavar="ADDR", help="--backend ray: a running cluster "
                                             "(auto or ray://host:port); default: start a local instance")]
Csv = Annotated[bool, typer.Option("--csv", help="also write metrics.csv (the rows of metrics.parquet as text; "
                                                  "kept up to date by later resumes and reports)")]
Plugins = Annotated[list[str] | None, typer.Option("--plugin", metavar="MODULE|FILE",
                                                   help="import a plugin (a module, a .py file or module:Object) "
                                                        "before the experiment is read; repeatable")]


def _out() -> Console:
    """stdout console: 80 columns when piped (tables are laid out for 80 columns anyway)."""
    return Console(width=None if sys.stdout.isatty() else 80, highlight=False)


def _warn(message: str) -> None:
    err_console.print(f"collapselab: warning: {message}", markup=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _warn(" ".join(str(message).split()))


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks instead of one-line errors")]
          = False) -> None:
    _state["debug"] = debug


def _backend(backend: str, address: str | None, workers: int) -> None:
    """One-line errors for a backend setting that cannot apply."""
    from collapselab.runner import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError(f"--backend: {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend != "ray" and address is not None:
        raise ConfigError("--address: only with --backend ray")
    if backend == "ray" and workers > 1:
        raise ConfigError("--workers: applies to --backend local; with --backend ray every chain batch is a Ray task "
                          "and the cluster's CPUs decide how many run at once")


def _execute(exp, store, workers: int, quiet: bool, backend, csv: bool = False):
    """Run the chains (on ``backend``, which :func:`collapselab.runs.preflight` checked) with a progress bar (stderr);
    returns the summary after writing the outputs."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from collapselab.report.outputs import wants_csv
    from collapselab.runs import Outputs, assemble, execute, finish, prepare

    _state["run_dir"], _state["exp"] = store.root, exp
    prepare(exp, store, _warn)  # checkpoint warnings and errors come before the progress bar
    total = len(exp.arms) * exp.n_batches * (exp.generations + 1)
    arms = f"{len(exp.arms)} arm{'s' * (len(exp.arms) != 1)}"
    seeds = f"{exp.seeds} seed{'s' * (exp.seeds != 1)}"
    with Outputs(exp, csv=wants_csv(store, csv)) as outputs:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("generations"), TimeElapsedColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), console=err_console,
                      disable=quiet, transient=True) as bar:
            task = bar.add_task(f"{exp.name}: {arms} x {seeds}", total=total)
            results = execute(exp, store, workers, None if quiet else lambda arm, batch, g: bar.advance(task),
                              warn=_warn, backend=backend, checked=True, prepared=True, outputs=outputs)
        return finish(exp, store, assemble(exp, results), outputs)


def _show_result(exp, summary, run_dir: Path) -> None:
    from collapselab.report import rich_table

    out = _out()
    out.print(rich_table(exp, summary, width=out.width))
    tables = ", ".join(str(run_dir / n) for n in ("metrics.parquet", "metrics.csv") if (run_dir / n).exists())
    out.print(f"report: {run_dir / 'report.html'}\ntables: {tables}", soft_wrap=True)


@app.command()
def run(
    experiment: Annotated[str, typer.Argument(metavar="[NAME|FILE]",
                                              help="built-in experiment name or path to a YAML file")] = "quickstart",
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR",
                                             help="run directory (default runs/<name>)")] = None,
    seeds: Annotated[int | None, typer.Option(metavar="N", help="number of seeds (chains per arm)")] = None,
    generations: Annotated[int | None, typer.Option(metavar="G", help="last generation")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="override a setting (dotted path, YAML value); "
                                                        "repeatable")] = None,
    workers: Workers = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace the run at --out (only files "
                                                               "collapselab wrote are removed)")] = False,
    quiet: Quiet = False,
    plugin: Plugins = None,
    backend: Backend = "local",
    address: Address = None,
    csv: Csv = False,
) -> None:
    """Run an experiment into a run directory (checkpoints, tables, summary, report)."""
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run, preflight

    _backend(backend, address, workers)
    exp = load_experiment(experiment, set_, seeds, generations, plugins=plugin)
    target = out or Path("runs") / exp.name
    chosen = preflight(exp, backend, address, target, workers)  # every guard, before anything is written
    with create_run(exp, target, overwrite) as store:
        summary = _execute(exp, store, workers, quiet, chosen, csv)
    _show_result(exp, summary, target)


@app.command()
def resume(run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="run directory")], workers: Workers = 1,
           generations: Annotated[int | None, typer.Option(metavar="G", help="extend the run to generation G")]
           = None, quiet: Quiet = False,
           allow_plugin_change: Annotated[bool, typer.Option("--allow-plugin-change", help="continue although a "
                                                             "plugin changed since the run began (recorded in "
                                                             "run.json)")] = False,
           backend: Backend = "local", address: Address = None, csv: Csv = False) -> None:
    """Continue a stopped run from its newest verified checkpoint (results equal an uninterrupted run)."""
    from collapselab.runner import backend_for
    from collapselab.runs import open_run, preflight

    _backend(backend, address, workers)
    chosen = backend_for(workers, backend, address)
    store, exp = open_run(run_dir, generations, allow_plugin_change,
                          check=lambda e: preflight(e, chosen, run_dir=run_dir))
    with store:
        summary = _execute(exp, store, workers, quiet, chosen, csv)
    _show_result(exp, summary, run_dir)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="run directory")], csv: Csv = False) -> None:
    """Rebuild the tables, summary.json, figures and report.html from the verified checkpoints."""
    from collapselab.runs import collect, finish, open_run

    store, exp = open_run(run_dir, allow_plugin_change=None)
    with store:
        _state["run_dir"], _state["exp"] = store.root, exp
        summary = finish(exp, store, collect(exp, store), csv=csv)
    _show_result(exp, summary, run_dir)


@app.command()
def audit(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="a local Hugging Face causal-LM folder, or smollm2")],
    text: Annotated[Path | None, typer.Option("--text", metavar="FILE", help="UTF-8 real text (default: the "
                                              "--corpus's test articles)")] = None,
    corpus: Annotated[str, typer.Option(metavar="NAME", help="built-in corpus when no --text: wikipedia or plays")]
    = "wikipedia",
    windows: Annotated[int, typer.Option(min=1, max=100_000, metavar="N", help="windows to rewrite")] = 128,
    window: Annotated[int, typer.Option(min=1, max=8192, metavar="W", help="tokens per window")] = 32,
    context: Annotated[int, typer.Option(min=0, max=100_000, metavar="C", help="real tokens before each window")]
    = 96,
    decoding: Annotated[str, typer.Option(metavar="MODE", help="greedy or sample (temperature 1)")] = "greedy",
    drop: Annotated[float, typer.Option(metavar="SHARE", help="share of self-generated tokens TCE should drop, "
                                        "0 < SHARE < 1")] = 0.5,
    seed: Annotated[int, typer.Option(min=0, metavar="S", help="sampling seed")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR",
                                             help="output folder (default audits/<model name>)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an earlier audit in --out")] = False,
) -> None:
    """Audit a causal LM's confidence on its own text vs real text (ForTIFAI's Fig. 1) and the TCE gamma."""
    from collapselab.audit import FILES, load_text, model_folder, run_audit, write_audit
    from collapselab.decoding import Decoding

    if decoding not in ("greedy", "sample"):
        raise ConfigError(f"--decoding: {decoding!r}; allowed: greedy, sample")
    if not 0.0 < drop < 1.0:
        raise ConfigError(f"--drop: {drop:g}; allowed: 0 < SHARE < 1")
    folder = model_folder(model)
    target = out or Path("audits") / folder.name
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out: {target} is a file; give a folder for the audit")
    clash = [name for name in FILES if (target / name).exists()]
    if clash and not overwrite:
        raise ConfigError(f"--out: {target} already holds an audit ({', '.join(clash)}); pass --overwrite to "
                          f"replace it")
    real = load_text(text, corpus)
    try:
        result = run_audit(folder, real, windows=windows, window=window, context=context,
                           decoding=Decoding(mode=decoding), drop=drop, seed=seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if result.windows < windows:
        _warn(f"--windows: the text holds {result.windows} windows of {window} tokens after the context, fewer than "
              f"the {windows} asked; the audit uses them all")
    write_audit(result, target)
    o = _out()
    o.print(f"{folder.name}: {result.windows} windows of {window} tokens, context {context}, {decoding}")
    o.print(f"  mean confidence on its own text {result.mean_self:.4f}, on real text {result.mean_real:.4f}")
    o.print(f"  gap {result.gap:+.4f} [95% CI {result.gap_lo:+.4f}, {result.gap_hi:+.4f}]")
    o.print(f"  TCE gamma {result.gamma:.4f} drops {drop:.0%} of its own tokens and keeps "
            f"{result.real_kept:.1%} of the real ones")
    o.print(f"audit: {target / 'audit.json'}, {target / 'confidence.png'}")


@app.command()
def doctor(address: Annotated[str | None, typer.Option("--address", metavar="ADDR", help="a Ray cluster to inspect "
                                                       "(auto or ray://host:port)")] = None) -> None:
    """Check what this machine has for collapselab (versions, devices, data, cache, plugins); exit 1 if the
    catalog lacks something, with how to get it."""
    from collapselab.doctor import run_checks

    checks = run_checks(address)
    out = _out()
    for c in checks:
        mark = "ok" if c.ok else ("MISSING" if c.needed else "-")
        line = f"{mark:<8} {c.name:<24} {c.detail}"
        if not c.ok and c.fix:
            line += f"  [{c.fix}]"
        out.print(line, soft_wrap=True, markup=False)
    missing = [c for c in checks if c.needed and not c.ok]
    if missing:
        out.print(f"{len(missing)} needed piece(s) missing: {', '.join(c.name for c in missing)}", markup=False)
        raise SystemExit(1)


@app.command("list")
def list_(what: Annotated[str, typer.Argument(metavar="[WHAT]", help="experiments (default), losses, curators, "
                                              "regimes, families, sources, metrics or all")] = "experiments",
          plugin: Plugins = None) -> None:
    """List the built-in experiments, or the losses, curators, ... (built-ins and plugins, with their origin)."""
    from collapselab.registry import PLURALS

    kinds = {plural: kind for kind, plural in PLURALS.items()}
    out = _out()
    if what not in ("experiments", "all", *kinds):
        raise ConfigError(f"list: {what!r}; allowed: experiments, {', '.join(kinds)}, all")
    if what in ("experiments", "all"):
        from collapselab.experiments.catalog import catalog_summaries

        rows = catalog_summaries()
        width = max(len(name) for name, _ in rows) + 2  # names never run into their descriptions
        for name, line in rows:
            out.print(f"{name:<{width}}{line}", soft_wrap=False, overflow="ellipsis", no_wrap=True, crop=True)
    if what == "experiments":
        return
    from collapselab.plugins import load_plugins, normalize_spec, registries

    load_plugins([normalize_spec(p) for p in plugin or []])
    regs = registries()
    for plural, kind in kinds.items():
        if what not in (plural, "all"):
            continue
        out.print(f"\n{plural}:" if what == "all" else f"{plural}:")
        for name, origin in regs[kind].listing():
            extra = _loss_line(regs[kind], name) if kind == "loss" and "shadowed" not in origin else ""
            out.print(f"  {name:<22}{origin}{extra}", soft_wrap=True)


def _loss_line(reg, name: str) -> str:
    """A loss's properties, computed from its definition (or why they could not be)."""
    try:
        p = reg.config_class(reg[name])().properties()
    except Exception as e:  # a plugin without defaults, or one that fails: say so, list the rest
        return f"; properties: not computed ({type(e).__name__})"
    from collapselab.losses.ulosses import weight_problem

    ratio = "inf" if p["variation_ratio"] == float("inf") else f"{p['variation_ratio']:.4g}"
    why = weight_problem(reg.config_class(reg[name])())
    return (f"; down-weights {p['down_weights']}, w(u) in [{p['w_min']:.3g}, {p['w_max']:.3g}], "
            f"variation ratio {ratio}" + (f"; REFUSED in experiments: {why}" if why else ""))


@app.command()
def show(experiment: Annotated[str, typer.Argument(metavar="NAME|FILE", help="built-in name or YAML file")],
         resolved: Annotated[bool, typer.Option("--resolved", help="print the fully resolved experiment")]
         = False) -> None:
    """Print an experiment's YAML."""
    from collapselab.experiments import catalog_names, catalog_text, dump_experiment, load_experiment
    from collapselab.experiments.loader import read_yaml_text

    exp = load_experiment(experiment)
    if resolved:
        text = dump_experiment(exp)
    elif experiment in catalog_names():
        text = catalog_text(experiment)
    else:
        text = read_yaml_text(Path(experiment))
    sys.stdout.write(text)


def _fail(msg: str, code: int) -> None:
    err_console.print(f"collapselab: error: {msg}", markup=False, soft_wrap=True)
    raise SystemExit(code)


def _interrupted_message() -> str:
    """Where an interrupted run stands on disk: the generation every started chain batch has saved."""
    run_dir, exp = _state.get("run_dir"), _state.get("exp")
    if run_dir is None or exp is None:
        return "interrupted"
    from collapselab.chain import last_checkpoint
    from collapselab.store import chain_folder

    saved = [last_checkpoint(chain_folder(run_dir, a.name, b)) for a in exp.arms for b in range(exp.n_batches)]
    started = [g for g in saved if g is not None and g < exp.generations]
    finished = sum(g == exp.generations for g in saved)
    if started:
        where = f"after generation {min(started)}"
    elif finished == len(saved):
        where = f"after generation {exp.generations}"
    else:
        where = "before a generation was saved" if not finished else "between chain batches"
    if len(saved) > 1:
        where += f" ({finished} of {len(saved)} chain batches finished)"
    return f"interrupted {where}; continue with `collapselab resume {run_dir}`"


def _on_signal(signum: int, frame) -> None:
    # the first signal stops the run; later ones are ignored so the clean-up (killing workers) completes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with documented exit codes (see the module docstring)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    _state.update(run_dir=None, exp=None)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_show, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        code = app(args=args, standalone_mode=False, prog_name="collapselab")
    except typer.TyperException as e:  # usage errors of typer's bundled click
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(e.format_message() + "\n")
            raise SystemExit(0) from None
        _fail(" ".join(e.format_message().split()), getattr(e, "exit_code", 2))
    except Interrupted as e:
        _fail(_interrupted_message(), e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        _fail(_interrupted_message(), 130)
    except ConfigError as e:
        if debug:
            raise
        _fail(" ".join(str(e).split()), 2)
    except ChainError as e:
        if debug:
            raise
        _fail(f"{e} (finished generations are kept in the run directory)", 1)
    except StoreError as e:
        if debug:
            raise
        _fail(str(e), 1)
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except Exception as e:
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _fail(f"internal error ({type(e).__name__}{': ' + first if first else ''}); rerun with --debug for the "
              f"traceback", 1)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        warnings.showwarning = previous_show
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
