"""The `xbench` command line. Heavy libraries (torch, transformers, datasets) load only inside
the commands that train or evaluate, so `xbench --help` and `xbench list` answer at once."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from xbench import __version__
from xbench.errors import XbenchError

app = typer.Typer(name="xbench", help="Benchmark cross-lingual transfer of pretrained language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
baseline_app = typer.Typer(help="Manage stored regression references (baselines/*.json).", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect and clean the cache of built models, encoders and features.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
app.add_typer(cache_app, name="cache")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        # Piped or in CI rich assumes 80 columns: it cuts a 12-language table to `5…` and folds an
        # error into several lines. A log has no width, so print everything whole.
        console = Console(stderr=stderr, width=10_000, no_color=True)
    return console


def _csv(value: str | None) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()] if value else []


def _parse_seeds(value: str | None) -> list[int] | None:
    """`--seeds 1,2,3`; None when not given. An empty list or item is an error, not "the profile's seeds"."""
    if value is None:
        return None
    items = [x.strip() for x in value.split(",")]
    bad = [x for x in items if not x.lstrip("-").isdigit()]
    if not value.strip() or bad:
        shown = ", ".join(repr(x) for x in bad) if value.strip() else "nothing"
        raise XbenchError(f"--seeds expects comma-separated non-negative integers (e.g. 1,2,3), got {shown} in '{value}'")
    seeds = [int(x) for x in items]
    negative = [s for s in seeds if s < 0]
    if negative:
        raise XbenchError(f"--seeds: seeds are non-negative integers, got {', '.join(map(str, negative))}")
    return seeds


def _version(value: bool) -> None:
    if value:
        print(f"xbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    pass


TasksDirOption = Annotated[Optional[list[Path]], typer.Option(
    "--tasks-dir", help="A folder of your own task cards (*.yaml), used beside the built-in ones (repeatable; "
                        "XBENCH_TASKS_DIRS adds more, separated as in PATH).")]


def _use_tasks_dirs(dirs: list[Path] | None) -> None:
    from xbench.cards import set_cli_tasks_dirs

    set_cli_tasks_dirs(dirs or [])


@app.command("list")
def list_cmd(tasks_dir: TasksDirOption = None) -> None:
    """Tasks (languages, metric, protocols), methods (built-in and installed plugins) and profiles."""
    from rich.table import Table

    from xbench.profiles import available, load_profile
    from xbench.cards import all_cards
    from xbench.registry import TASK_TYPES, all_methods, task_types

    _use_tasks_dirs(tasks_dir)
    console = _console()
    tasks = Table(title="Tasks", show_lines=False)
    for col in ("task", "type", "metric", "languages", "protocols (default first)"):
        tasks.add_column(col)
    for name, card in sorted(all_cards().items()):
        protos = [card.default_protocol] + [p for p in card.protocols if p != card.default_protocol]
        tasks.add_row(f"{name} v{card.version}", card.task_type, card.metric,
                      f"{len(card.languages)}: {' '.join(card.languages)}", ", ".join(protos))
    console.print(tasks)
    types = Table(title="Task types")
    for col in ("task type", "implementation"):
        types.add_column(col)
    for name, target in task_types().items():
        types.add_row(name, target + ("" if name in TASK_TYPES else " (installed plugin)"))
    console.print(types)
    methods = Table(title="Methods")
    for col in ("method", "kind", "summary"):
        methods.add_column(col)
    for m in sorted(all_methods().values(), key=lambda m: (m.kind == "baseline", m.name)):
        methods.add_row(m.name, m.kind, m.summary)
    console.print(methods)
    profiles = Table(title="Profiles")
    for col in ("profile", "model", "seeds", "description"):
        profiles.add_column(col)
    for name in available():
        p = load_profile(name)
        profiles.add_row(name, p["model"], ",".join(map(str, p["seeds"])), p["description"])
    console.print(profiles)


def _parse_params(items: list[str], option: str = "--param") -> dict[str, str]:
    params, problem = _split_params(items, option)
    if problem:
        raise XbenchError(problem)
    return params


def _split_params(items: list[str], option: str) -> tuple[dict[str, str], str | None]:
    """The well-formed key=value items, and a problem naming the others (None if there are none)."""
    params, bad = {}, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            bad.append(item)
        else:
            params[key.strip()] = value.strip()
    return params, (f"{option} expects key=value, got: {', '.join(bad)}" if bad else None)


@app.command()
def run(
    method: Annotated[str, typer.Option(help="Method or baseline (see `xbench list`).")],
    task: Annotated[str, typer.Option(help="Task name (see `xbench list`).")],
    langs: Annotated[str, typer.Option(help="Comma-separated target languages, e.g. de,zh.")],
    protocol: Annotated[Optional[str], typer.Option(help="Evaluation protocol; the card's default if omitted.")] = None,
    profile: Annotated[str, typer.Option(help="Run profile: smoke (pipeline check, tiny models), cpu (a real pretrained model on a laptop) or paper (GPU).")] = "smoke",
    model: Annotated[Optional[str], typer.Option(help="Source model: hub name, local path or xbench/tiny-*.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated fine-tuning seeds; the profile's if omitted.")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where result files go.")] = Path("results"),
    data_dir: Annotated[Optional[Path], typer.Option(help="A data root searched before XBENCH_DATA (adds to it; its files override).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Method parameter key=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue interrupted training from its checkpoints; skip finished seeds.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing result files of the same identity.")] = False,
    question_langs: Annotated[Optional[str], typer.Option(help="MLQA G-XLT: question languages for each context language.")] = None,
    treebank: Annotated[Optional[str], typer.Option(help="UD: which test treebanks, e.g. pud.")] = None,
    option: Annotated[Optional[list[str]], typer.Option(help="Other task option key=value (repeatable).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a profile setting, e.g. finetune.max_steps=50 or pretrain.mlm.lr=1e-3 (repeatable).")] = None,
    tasks_dir: TasksDirOption = None,
    slot: Annotated[Optional[list[str]], typer.Option(help="Fill a data slot of the paper profile: name=path or name=hub-dataset, e.g. mono_de=de.txt (repeatable).")] = None,
    slots: Annotated[Optional[Path], typer.Option(help="A YAML file of data slots: slot -> path, or slot -> {hub:, config:, split:, revision:}.")] = None,
    allow_fallback: Annotated[bool, typer.Option(help="Use the shared-data substitute for a missing data slot; the rows are flagged.")] = False,
    report_to: Annotated[Optional[str], typer.Option(help="Log every stage's losses, lr and throughput to tensorboard, mlflow and/or wandb (comma-separated; files under <output-dir>/tracking; wandb offline unless WANDB_MODE says otherwise).")] = None,
) -> None:
    """Build the encoder, fine-tune, evaluate, and write one result file per seed."""
    from collections.abc import Callable
    from typing import Any

    from xbench.errors import ConfigError
    from xbench.run.orchestrate import RunRequest, resolve
    from xbench.run.orchestrate import run as run_pipeline

    _use_tasks_dirs(tasks_dir)
    problems: list[str] = []

    def parsed(parse: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """parse(*args), or `default` with the syntax error kept to be reported with resolve()'s problems."""
        try:
            return parse(*args)
        except XbenchError as exc:
            problems.append(str(exc))
            return default

    problems += _tracking(report_to, output_dir)
    overrides, set_problem = _split_params(set_ or [], "--set")  # the well-formed items are still checked
    problems += [set_problem] if set_problem else []
    slot_items, slot_problem = _split_params(slot or [], "--slot")
    problems += [slot_problem] if slot_problem else []
    req = RunRequest(method=method, task=task, langs=_csv(langs), protocol=protocol, profile=profile, model=model,
                     seeds=parsed(_parse_seeds, seeds), output_dir=str(output_dir),
                     data_dir=str(data_dir) if data_dir else None, resume=resume, overwrite=overwrite,
                     params=parsed(_parse_params, param or [], default={}),
                     options=parsed(_task_options, question_langs, treebank, option or [], default={}),
                     overrides=overrides, slots=slot_items, slots_file=str(slots) if slots else None,
                     allow_fallback=allow_fallback)
    if problems:  # every problem at once: the rest of the request is still checked
        try:
            resolve(req)
        except ConfigError as exc:
            problems += exc.problems
        raise ConfigError(problems, source="xbench run")
    console = _console()
    paths = run_pipeline(req, console)
    _print_run_table(console, paths)


def _tracking(report_to: str | None, output_dir: Path) -> list[str]:
    """Turn --report-to into the runner's environment (inherited by a sweep's jobs); its problems, if any."""
    if not report_to:
        return []
    import os

    from xbench.runner.trainer import REPORT_TO_ENV, TRACKING_DIR_ENV, tracker_problems

    names = _csv(report_to)
    problems = tracker_problems(names)
    if not problems:
        os.environ[REPORT_TO_ENV] = ",".join(names)
        os.environ[TRACKING_DIR_ENV] = str(Path(output_dir).resolve() / "tracking")
        os.environ.setdefault("WANDB_MODE", "offline")  # no account or network needed; `wandb sync` later
    return problems


def _task_options(question_langs: str | None, treebank: str | None, items: list[str]) -> dict[str, object]:
    options: dict[str, object] = dict(_parse_params(items, "--option"))
    if question_langs:
        options["question_langs"] = _csv(question_langs)
    if treebank:
        options["treebank"] = treebank
    return options


def _print_run_table(console, paths: list[Path]) -> None:
    from rich.table import Table

    from xbench.results.schema import load_result

    results = [load_result(p) for p in paths]
    if not results:
        return
    langs = results[0]["scores"]["languages"]
    metric = results[0]["scores"]["metric"]
    table = Table(title=f"{results[0]['task']['name']} · {results[0]['method']['name']} · {metric} ×100")
    for col in ["seed", *langs, "avg", "transfer FLOPs", "wall s"]:
        table.add_column(col, justify="right")
    for r in results:
        per = r["scores"]["per_language"]
        table.add_row(str(r["run"]["seed"]), *[f"{100 * per[lang][metric]:.1f}" for lang in langs],
                      f"{100 * r['scores']['average']:.1f}", f"{r['compute']['transfer_total']['flops_est']:.2e}",
                      f"{r['compute']['wall_seconds_total']:.0f}")
    console.print(table)


@app.command()
def sweep(
    grid: Annotated[str, typer.Argument(help="The grid file (YAML), or `status` followed by the grid file.")],
    status_of: Annotated[Optional[str], typer.Argument(metavar="[GRID]", help="With `status`: the grid file.")] = None,
    executor: Annotated[str, typer.Option(help="local (this machine) or slurm (submitit's Slurm executor).")] = "local",
    max_parallel: Annotated[int, typer.Option(help="local: at most this many jobs at once.")] = 1,
    partition: Annotated[Optional[str], typer.Option(help="slurm: the partition.")] = None,
    gpus_per_job: Annotated[int, typer.Option(help="slurm: GPUs per job.")] = 0,
    cpus_per_job: Annotated[int, typer.Option(help="slurm: CPUs per job.")] = 1,
    mem_gb: Annotated[Optional[float], typer.Option(help="slurm: memory per job, GB.")] = None,
    time: Annotated[int, typer.Option(help="slurm: time limit per job, minutes.")] = 60,
    account: Annotated[Optional[str], typer.Option(help="slurm: account.")] = None,
    qos: Annotated[Optional[str], typer.Option(help="slurm: QoS.")] = None,
    sbatch: Annotated[Optional[list[str]], typer.Option(help="slurm: another sbatch flag key=value (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Rerun every run, also those whose result exists.")] = False,
    results_dir: Annotated[Optional[Path], typer.Option(help="Where the results go (default: the grid's results_dir).")] = None,
    report_to: Annotated[Optional[str], typer.Option(help="Every job logs its stages to tensorboard, mlflow and/or wandb (comma-separated; files under <results dir>/tracking).")] = None,
) -> None:
    """Run a grid of methods × tasks × languages × seeds as jobs (encoders built once, first); again after
    failures: only what is missing or failed runs. `xbench sweep status GRID` shows where each job stands."""
    from xbench.run.sweep import SlurmOptions, run_sweep, sweep_status

    console = _console()
    if grid == "status":
        if status_of is None:
            raise XbenchError("xbench sweep status needs the grid file: xbench sweep status grid.yaml")
        _print_sweep_status(console, sweep_status(status_of, results_dir))
        return
    if status_of is not None:
        raise XbenchError(f"unexpected argument '{status_of}': give one grid file (or `status GRID`)")
    if report_to:
        from xbench.errors import ConfigError
        from xbench.run.sweep import read_grid

        problems = _tracking(report_to, results_dir or read_grid(grid).results_dir)
        if problems:
            raise ConfigError(problems, source="xbench sweep")
    extra = dict(_parse_params(sbatch or [], "--sbatch"))
    opts = SlurmOptions(partition=partition, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem_gb,
                        time_min=time, account=account, qos=qos, sbatch={k: str(v) for k, v in extra.items()})
    state = run_sweep(grid, executor=executor, max_parallel=max_parallel, slurm=opts, force=force, console=console,
                      results_dir=results_dir)
    counts = state.counts()
    console.print(" · ".join(f"{k} {v}" for k, v in counts.items()) + f" · {state.seconds:.0f} s")
    failed = [(state.jobs[k], r) for k, r in state.rows.items() if r["state"] == "failed"]
    for job, row in failed:
        console.print(f"[red]failed[/red] {job.label}: {row['error']} (log {row['stderr']})", markup=True)
    if failed:
        raise typer.Exit(1)


def _print_sweep_status(console, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="xbench sweep status")
    for col in ("job", "kind", "state", "scheduler id", "log", "result"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["label"], row["kind"], row["state"], row.get("scheduler_id") or "", row.get("stderr") or "",
                      row.get("result") or "")
    console.print(table)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    console.print(" · ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@app.command()
def leaderboard(
    task: Annotated[Optional[str], typer.Option(help="Only this task.")] = None,
    results_dir: Annotated[Path, typer.Option(help="Where result files are.")] = Path("results"),
    output_dir: Annotated[Path, typer.Option(help="Where leaderboards/<task>.md, <task>.csv and <task>-compute.png go.")] = Path("leaderboards"),
) -> None:
    """Write leaderboards/<task>.md (and .csv, -compute.png) from result files alone, and print them."""
    from xbench.results.leaderboard import rich_tables, write_leaderboards

    if not results_dir.is_dir():
        raise XbenchError(f"no results directory {results_dir}; run `xbench run` first or pass --results-dir")
    written = write_leaderboards(results_dir, output_dir, task)
    if not written:
        raise XbenchError(f"no result files{' for task ' + task if task else ''} under {results_dir}")
    console = _console()
    for path, tables in written:
        for t in rich_tables(tables):
            console.print(t)
        console.print(f"[green]wrote[/green] {path}")


@app.command()
def check(
    reference: Annotated[Path, typer.Option(help="Reference written by `xbench baseline update`.")],
    results_dir: Annotated[Path, typer.Option(help="Where result files are.")] = Path("results"),
    floor: Annotated[Optional[float], typer.Option(help="Override the reference's tolerance floor (fraction).")] = None,
    k: Annotated[Optional[float], typer.Option(help="Override the reference's k (multiples of the reference std).")] = None,
) -> None:
    """Exit 0 when every reference entry is within tolerance; 1 with a table of what moved; 2 for bad input
    (a malformed or empty reference, a malformed result file)."""
    from rich.table import Table

    from xbench.results.check import compare, load_reference
    from xbench.results.schema import iter_results

    ref = load_reference(reference)
    if not results_dir.is_dir():
        raise XbenchError(f"no results directory {results_dir}; run the suite first or pass --results-dir")
    for name, value in (("--floor", floor), ("--k", k)):
        if value is not None and not (value >= 0 and value != float("inf")):
            raise XbenchError(f"{name} {value}: expected a non-negative number")
    rows = compare(ref, iter_results(results_dir), floor=floor, k=k)
    bad = [r for r in rows if r.status != "ok"]
    console = _console()
    if not bad:
        console.print(f"[green]check passed[/green]: {len(rows)} entries within tolerance of {reference}")
        return
    table = Table(title=f"{len(bad)} of {len(rows)} entries moved beyond tolerance ({reference})")
    for col in ("entry", "reference", "now", "Δ", "tolerance", "status"):
        table.add_column(col)
    for r in bad:
        table.add_row(r.id, f"{100 * r.ref_mean:.2f} ± {100 * r.ref_std:.2f}",
                      "missing" if r.mean is None else f"{100 * r.mean:.2f}",
                      "–" if r.delta is None else f"{100 * r.delta:+.2f}", f"{100 * r.threshold:.2f}", r.status)
    console.print(table)
    raise typer.Exit(1)


@baseline_app.command("update")
def baseline_update(
    output: Annotated[Path, typer.Option(help="Reference file to write, e.g. baselines/smoke.json.")] = Path("baselines/smoke.json"),
    results_dir: Annotated[Path, typer.Option(help="Where result files are.")] = Path("results"),
    profile: Annotated[Optional[str], typer.Option(help="Only results of this profile.")] = None,
    floor: Annotated[float, typer.Option(help="Tolerance floor, as a fraction (0.01 = one point).")] = 0.01,
    k: Annotated[float, typer.Option(help="Tolerance in multiples of the reference std.")] = 2.0,
    method_floor: Annotated[Optional[list[str]], typer.Option("--method-floor", help="METHOD=FLOOR: a method's own floor, for an encoder build that is not repeatable (repeatable option; kept from the existing reference when not given).")] = None,
) -> None:
    """Write a reference from the current results, for review in git."""
    from xbench.atomic import atomic_write_json
    from xbench.errors import ConfigError
    from xbench.results.check import load_reference, make_reference
    from xbench.results.schema import iter_results

    floors: dict[str, float] = {}
    if method_floor is None and output.is_file():
        floors = dict(load_reference(output)["tolerance"].get("method_floors", {}))
    problems = []
    for item in method_floor or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not name or not (0 <= number < float("inf")):
            problems.append(f"--method-floor {item!r}: expected METHOD=FLOOR with a non-negative fraction, e.g. trelm=0.05")
        else:
            floors[name] = number
    if problems:
        raise ConfigError(problems, source="xbench baseline update")
    results = [r for r in iter_results(results_dir) if profile is None or r["run"]["profile"] == profile]
    if not results:
        raise XbenchError(f"no result files under {results_dir}" + (f" for profile {profile}" if profile else ""))
    ref = make_reference(results, floor=floor, k=k, method_floors=floors)
    atomic_write_json(output, ref)
    _console().print(f"[green]wrote[/green] {output} ({len(ref['entries'])} entries); review it with `git diff`")


@app.command()
def validate(tasks_dir: TasksDirOption = None,
             grid: Annotated[Optional[list[Path]], typer.Option(help="Also check this sweep grid file (repeatable).")] = None,
             ) -> None:
    """Check every task card (built-in and --tasks-dir), profile, installed plugin and given sweep grid; report
    every problem at once."""
    from xbench.profiles import available, load_profile, profile_problems
    from xbench.cards import validate_all_cards
    from xbench.run.request import method_params_problems, protocol_override_problems
    from xbench.registry import plugin_problems

    _use_tasks_dirs(tasks_dir)
    problems = plugin_problems()
    cards, card_problems = validate_all_cards()
    problems += card_problems
    for name in available():
        own = profile_problems(name)
        if not own:
            profile = load_profile(name)
            own = method_params_problems(profile) + protocol_override_problems(profile, cards)
        problems += own
    from xbench.errors import ConfigError

    for path in grid or []:
        from xbench.run.sweep import read_grid
        from xbench.run.sweep.grid import grid_problems

        try:
            problems += grid_problems(read_grid(path))
        except ConfigError as exc:
            problems += [f"grid {path}: {p}" for p in exc.problems]
        except XbenchError as exc:
            problems.append(str(exc))
    console = _console()
    if problems:
        console.print(f"[red]{len(problems)} problem(s):[/red]")
        for p in problems:
            console.print(f"  - {p}", markup=False)
        raise typer.Exit(1)
    console.print(f"[green]ok[/green]: {len(cards)} task cards, {len(available())} profiles"
                  + (f", {len(grid)} sweep grid(s)" if grid else ""))


@cache_app.command("ls")
def cache_ls() -> None:
    """List the cache: built entries, half-built work folders, stale temporaries, locks, the feature cache."""
    from rich.table import Table

    from xbench.cache import cache_items, cache_root

    table = Table(title=f"xbench cache ({cache_root()})")
    for col in ("kind", "id", "status", "built", "size"):
        table.add_column(col)
    for row in cache_items():
        table.add_row(row["kind"], row["id"], row["status"], row["built_at"] or "", f"{row['bytes'] / 1e6:.1f} MB")
    _console().print(table)


@cache_app.command("rm")
def cache_rm(
    kind: Annotated[Optional[str], typer.Option(help="Only items of this kind (e.g. encoders, finetuned, features).")] = None,
    entry: Annotated[Optional[str], typer.Option(help="Only the entry whose id starts with this.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove everything not in use by a running process.")] = False,
) -> None:
    """Remove cache entries, half-built work folders, stale temporaries, free locks and features
    (rebuilt when needed); what a running build holds is left alone."""
    from xbench.cache import cache_items, clean_cache

    if not (kind or entry or all_):
        raise XbenchError("say what to remove: --kind, --entry or --all")
    removed = clean_cache(kind, entry)
    kept = sum(1 for r in cache_items() if r["status"] == "building" and (kind is None or r["kind"] == kind))
    done = ", ".join(f"{n} {status}" for status, n in sorted(removed.items())) or "nothing"
    _console().print(f"removed {done}" + (f"; kept {kept} in use by a running build" if kept else ""))


@app.command()
def curves(
    method: Annotated[str, typer.Option(help="Transfer method whose learning curves to draw (clp).")],
    lang: Annotated[str, typer.Option(help="Target language, e.g. de.")],
    model: Annotated[str, typer.Option(help="Causal source model (docs/methods/clp.md).")] = "xbench/tiny-en-gpt2",
    output_dir: Annotated[Path, typer.Option(help="Where curves-<method>-<lang>.png and .json go (beside the leaderboards).")] = Path("leaderboards"),
    data_dir: Annotated[Optional[Path], typer.Option(help="A data root searched before XBENCH_DATA (adds to it; its files override).")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Method parameter key=value (repeatable), e.g. steps=100.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated pretraining seeds: mean curves and steps saved as mean ± std.")] = None,
) -> None:
    """Held-out perplexity vs training tokens for the method, random init and source + random embeddings; steps saved."""
    from rich.table import Table

    from xbench.hfquiet import quiet_transformers
    from xbench.methods.clp.curves import build_curves
    from xbench.results.curves import describe_saved

    quiet_transformers()
    try:
        seed_list = [int(s) for s in _csv(seeds)]
    except ValueError:
        raise XbenchError(f"--seeds expects comma-separated integers, got '{seeds}'") from None
    result = build_curves(method, lang, model=model, data_dir=str(data_dir) if data_dir else None,
                          params=_parse_params(param or []), output_dir=output_dir, seeds=seed_list or None)
    data = result.data
    steps = [p["step"] for p in next(iter(data["runs"].values()))["curve"]]
    title = f"{method} · {lang} · held-out perplexity by optimizer step ({data['source_model']})"
    if len(data["seeds"]) > 1:
        title += f", mean of seeds {','.join(map(str, data['seeds']))}"
    table = Table(title=title)
    for col in ["run", *map(str, steps)]:
        table.add_column(col, justify="left" if col == "run" else "right", no_wrap=True)
    for variant, run in data["runs"].items():
        ppl = {p["step"]: p["perplexity"] for p in run["curve"]}
        table.add_row(variant, *["overflow" if ppl.get(s) is None else f"{ppl[s]:.0f}" for s in steps])
    console = _console()
    console.print(table)
    for variant, run in data["runs"].items():
        saved = data["steps_saved"].get(variant)
        console.print(f"{variant}: {run['tokens_seen']:,} training tokens"
                      + (f"; steps saved vs scratch: {describe_saved(saved)}" if saved else " (the scratch reference)"))
    lowest = data["lowest_at_start"]
    if isinstance(lowest, dict):
        console.print("lowest perplexity at step 0: " + "; ".join(
            f"seed {seed}: {data['runs'][v]['label']}" for seed, v in lowest.items() if v))
    elif lowest:
        console.print(f"lowest perplexity at step 0: {data['runs'][lowest]['label']}")
    console.print(f"[green]wrote[/green] {result.png_path} and {result.json_path}")


def main() -> None:
    try:
        app()
    except XbenchError as exc:
        from rich.text import Text

        # Messages quote user data ("[CLS]", paths), so they must not be read as rich markup.
        _console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _console(stderr=True).print("[yellow]interrupted[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
