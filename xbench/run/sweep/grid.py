"""A sweep's grid file (docs/sweeps.md, "The grid file"): profile, methods, tasks with their languages,
protocols and options, seeds, per-method parameters and profile overrides, read into the run requests
it stands for. Every problem of the file, and of every request it expands to, is reported at once.

```yaml
profile: smoke
methods: [clism, clism-mlm-control]
tasks:
  - {task: mlqa, langs: [de], protocols: [zero-shot]}
  - {task: mlqa, langs: [de], options: {question_langs: [en, de]}}
seeds: [1, 2]
model: xbench/tiny-multi-xlmr          # optional: --model of every run
method_params: {clism: {lr: 5.0e-4}}    # optional: --param of the runs of that method
set: {finetune.max_steps: 50}           # optional: --set of every run
results_dir: results/my-sweep           # optional: default results/<grid file stem>
```
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbench.errors import ConfigError, XbenchError

_TOP = {"profile", "methods", "tasks", "seeds", "model", "method_params", "set", "results_dir", "data_dir"}
_TASK = {"task", "langs", "protocols", "protocol", "options"}


@dataclass
class Grid:
    path: Path
    profile: str
    methods: list[str]
    tasks: list[dict[str, Any]]
    seeds: list[int]
    model: str | None = None
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    results_dir: Path = Path("results")
    data_dir: str | None = None

    def requests(self) -> list[Any]:
        """One RunRequest per (method, task entry, protocol), with every seed of the grid; expanded in a fixed
        order (methods, then task entries, then protocols) so that job lists read the same on every call."""
        from xbench.run.request import RunRequest

        out = []
        for method in self.methods:
            for entry in self.tasks:
                for protocol in entry["protocols"] or [None]:
                    out.append(RunRequest(method=method, task=entry["task"], langs=list(entry["langs"]),
                                          protocol=protocol, profile=self.profile, model=self.model,
                                          seeds=list(self.seeds), output_dir=str(self.results_dir),
                                          data_dir=self.data_dir, resume=True,
                                          params=dict(self.method_params.get(method, {})),
                                          options=dict(entry["options"]), overrides=dict(self.overrides),
                                          progress=False))
        return out


def _list_of_str(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",")]
    if isinstance(value, list) and value and all(isinstance(x, str) and x for x in value):
        return list(value)
    return None


def read_grid(path: str | Path, results_dir: str | Path | None = None) -> Grid:
    """The grid of `path`, checked field by field; ConfigError naming the file and every problem.
    `results_dir` (the command line's) replaces the file's."""
    from xbench.profiles import load_yaml

    path = Path(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise XbenchError(f"cannot read the grid file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a YAML syntax error names its line
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with profile, methods, tasks and seeds", source=str(path))
    problems = [f"unknown key '{k}' (valid: {', '.join(sorted(_TOP))})" for k in sorted(set(raw) - _TOP)]
    profile = raw.get("profile", "smoke")
    if not isinstance(profile, str):
        problems.append(f"profile must be a profile name, got {profile!r}")
    methods = _list_of_str(raw.get("methods"))
    if methods is None:
        problems.append("methods must be a non-empty list of method names, e.g. [clism, clism-mlm-control]")
    seeds = raw.get("seeds", [1])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                      for s in seeds)):
        problems.append(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"seeds lists a seed twice: {seeds}")
    tasks = []
    entries = raw.get("tasks")
    if not isinstance(entries, list) or not entries:
        problems.append("tasks must be a non-empty list of {task, langs[, protocols][, options]} entries")
        entries = []
    for i, entry in enumerate(entries):
        where = f"tasks[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with task and langs, got {entry!r}")
            continue
        problems += [f"{where}: unknown key '{k}' (valid: {', '.join(sorted(_TASK))})" for k in sorted(set(entry) - _TASK)]
        if not isinstance(entry.get("task"), str):
            problems.append(f"{where}.task must be a task name")
        langs = _list_of_str(entry.get("langs"))
        if langs is None:
            problems.append(f"{where}.langs must be a non-empty list of languages")
        protocols = entry.get("protocols", [entry["protocol"]] if "protocol" in entry else [])
        if "protocol" in entry and "protocols" in entry:
            problems.append(f"{where}: give protocol or protocols, not both")
        protocols = _list_of_str(protocols) if protocols else []
        if protocols is None:
            problems.append(f"{where}.protocols must be a list of protocol names")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            problems.append(f"{where}.options must be a mapping of task options, e.g. {{question_langs: [en, de]}}")
            options = {}
        tasks.append({"task": entry.get("task"), "langs": langs or [], "protocols": protocols or [],
                      # as the CLI gives them (lists of text, other values as text), so that a grid's run and the
                      # same `xbench run` have one identity
                      "options": {k: ([str(x) for x in v] if isinstance(v, list) else str(v)) for k, v in options.items()}})
    params = raw.get("method_params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        problems.append("method_params must map method names to {parameter: value}")
        params = {}
    elif methods is not None:
        problems += [f"method_params.{m}: '{m}' is not one of the grid's methods" for m in params if m not in methods]
    overrides = raw.get("set") or {}
    if not isinstance(overrides, dict):
        problems.append("set must map profile settings to values, e.g. {finetune.max_steps: 50}")
        overrides = {}
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        problems.append(f"model must be a model name or path, got {model!r}")
    results_dir = str(results_dir) if results_dir is not None else raw.get("results_dir", str(Path("results") / path.stem))
    if not isinstance(results_dir, str) or not results_dir:
        problems.append(f"results_dir must be a folder, got {results_dir!r}")
        results_dir = str(Path("results") / path.stem)
    if problems:
        raise ConfigError(problems, source=f"grid {path}")
    grid = Grid(path=path, profile=profile, methods=methods or [], tasks=tasks, seeds=list(seeds), model=model,
                method_params={m: {k: str(v) for k, v in p.items()} for m, p in params.items()},
                overrides={k: str(v) for k, v in overrides.items()}, results_dir=Path(results_dir),
                data_dir=raw.get("data_dir"))
    return grid


def grid_problems(grid: Grid) -> list[str]:
    """Every problem of every run the grid expands to (names, languages, protocols, parameters, options,
    overrides), each prefixed with the run it belongs to; nothing is loaded or built."""
    from xbench.methods.base import RunContext
    from xbench.registry import get_method, load_object
    from xbench.run.request import resolve

    problems: list[str] = []
    for req in grid.requests():
        where = f"{req.method} × {req.task}" + (f" ({req.protocol})" if req.protocol else "")
        try:
            rr = resolve(req)
        except ConfigError as exc:
            problems += [f"{where}: {p}" for p in exc.problems]
            continue
        except XbenchError as exc:
            problems.append(f"{where}: {exc}")
            continue
        checks = (lambda: rr.card.task_type_impl(req.options),  # task options (question_langs, few_shot, ...)
                  lambda: load_object(get_method(req.method).target)(  # the method's parameters, typed and ranged
                      RunContext(profile=rr.profile, model=rr.model, data_dir=req.data_dir, params=rr.params,
                                 langs=list(req.langs))))
        for check in checks:
            try:
                check()
            except ConfigError as exc:
                problems += [f"{where}: {p}" for p in exc.problems]
            except XbenchError as exc:
                problems.append(f"{where}: {exc}")
    return list(dict.fromkeys(problems))
