"""Run profiles: named bundles of defaults (model, seeds, fine-tuning and pretraining budgets)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xbench.errors import ConfigError, XbenchError

PROFILE_DIR = Path(__file__).parent
REQUIRED = {"name": str, "description": str, "data_setting": str, "model": str, "seeds": list,
            "finetune": dict, "pretrain": dict}


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def validate_profile(raw: Any, name: str) -> list[str]:
    if not isinstance(raw, dict):
        return [f"profile {name}: expected a mapping"]
    problems = [f"profile {name}: missing '{k}'" for k in REQUIRED if k not in raw]
    problems += [f"profile {name}: '{k}' must be a {t.__name__}" for k, t in REQUIRED.items()
                 if k in raw and not isinstance(raw[k], t)]
    if raw.get("data_setting") not in (None, "shared", "standard"):
        problems.append(f"profile {name}: data_setting must be 'shared' or 'standard'")
    for section in ("finetune", "pretrain"):
        for key, block in (raw.get(section) or {}).items():
            if not isinstance(block, dict) or "lr" not in block:
                problems.append(f"profile {name}: {section}.{key} needs at least 'lr'")
            elif not any(k in block for k in ("max_steps", "epochs", "max_tokens")):
                problems.append(f"profile {name}: {section}.{key} needs max_steps, epochs or max_tokens")
    return problems


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise XbenchError(f"unknown profile '{name}'; valid profiles: {', '.join(available())}")
    raw = yaml.safe_load(path.read_text())
    problems = validate_profile(raw, name)
    if problems:
        raise ConfigError(problems, source=str(path))
    return raw
