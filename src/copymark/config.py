"""Config conventions: pydantic v2 models that forbid unknown keys.

A typo in a config key is an error naming the key, never a silent default. Use
:class:`StrictModel` as the base of every config, and :func:`parse_config` to turn a dict
(from JSON or the CLI) into one with a readable :class:`~copymark.errors.ConfigError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from copymark.errors import ConfigError
from copymark.files import read_json


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=BaseModel)


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: ``where.key: message``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        else:
            parts.append(f"'{loc}': {e['msg']}")
    return f"{where}: " + "; ".join(parts)


def parse_config(model: type[M], data: dict[str, Any], where: str = "config") -> M:
    """Validate ``data`` against ``model``; raise ConfigError naming each bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        fields = ", ".join(sorted(model.model_fields))
        raise ConfigError(
            format_validation_error(err, where), hint=f"valid keys for {model.__name__}: {fields}"
        ) from None


def load_config(model: type[M], path: str | Path) -> M:
    """Read a JSON config file and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", hint="check the path")
    return parse_config(model, read_json(p, ConfigError), where=str(p))


def parse_json_arg(text: str | None, what: str, example: str = '{"generator": {"ngf": 32}}') -> dict[str, Any]:
    """A JSON object given inline (``'{...}'``) or as a path to a .json file (CLI ``--net-config``)."""
    if not text:
        return {}
    p = Path(text)
    if not text.lstrip().startswith("{") and p.is_file():
        text = p.read_text()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{what}: not valid JSON ({err})", hint=f"e.g. '{example}' or a path to a .json file"
        ) from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj
