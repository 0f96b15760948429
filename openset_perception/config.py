"""YAML configuration files, validated on load.

Schemas are pydantic models with ``extra='forbid'``, so an unknown or misspelt key, a wrong type or
a missing required value fails at start with a message naming the key path (``optimizer.lr``).
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

SchemaT = TypeVar("SchemaT", bound="StrictModel")
_MAX_SHOWN_INPUT = 200


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


class StrictModel(BaseModel):
    """Base of every config schema: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_config(path: str | Path, schema: type[SchemaT], overrides: dict | None = None) -> SchemaT:
    """Read YAML at ``path``, apply dotted-key ``overrides`` ({"optimizer.lr": 1e-4}), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return validate_config(data, schema, source=str(path))


def validate_config(data: dict, schema: type[SchemaT], source: str = "config") -> SchemaT:
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe_validation_error(error, schema)}") from None


def describe_validation_error(error: ValidationError, schema: type[BaseModel] | None = None) -> str:
    """Every problem as ``key.path: what is wrong (got value)``, joined by "; "."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {_describe(e, schema)}" for e in error.errors()
    )


def _describe(error: dict, schema: type[BaseModel] | None) -> str:
    if error["type"] == "extra_forbidden":
        *parents, leaf = error["loc"]
        known = _keys_at(schema, parents) if schema is not None else []
        close = difflib.get_close_matches(str(leaf), known, n=1, cutoff=0.6)
        return f"unknown key (did you mean '{close[0]}'?)" if close else "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    got = repr(error.get("input"))
    if len(got) > _MAX_SHOWN_INPUT:  # a card or config may hold megabytes in one value
        got = got[:_MAX_SHOWN_INPUT] + "..."
    return f"{error['msg']} (got {got})"


def _keys_at(schema: type[BaseModel], path: list) -> list[str]:
    """The keys a schema accepts at a key path (through nested sections and optional ones)."""
    model: object = schema
    for key in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or key not in fields:
            return []
        model = _model_in(fields[key].annotation)
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: object) -> object:
    """The pydantic model inside ``Model | None`` (or the annotation itself)."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), annotation)


def _set_dotted(data: dict, dotted: str, value: object) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a mapping")
    node[leaf] = value
