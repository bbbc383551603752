"""Builds Settings from defaults.yaml, an optional PAYWATCH_CONFIG file and
PAYWATCH__A__B environment overrides, in that order.

Layering is key by key so that a file holding ``simulator: {rate: 2000}``
keeps every other simulator default. Errors are raised as
:class:`SettingsError` whose message names the offending key, because the
operator reading a crash loop on Kubernetes needs the key, not a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from config.settings import Settings

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
CONFIG_ENV = "PAYWATCH_CONFIG"
OVERRIDE_PREFIX = "PAYWATCH__"


class SettingsError(ValueError):
    """The settings cannot be used; the message names the key and the fix."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into a copy of ``base``; nested mappings merge key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``PAYWATCH__SIMULATOR__RATE=2000`` into ``{"simulator": {"rate": 2000}}``."""
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(OVERRIDE_PREFIX):
            continue
        path = [part.lower() for part in name[len(OVERRIDE_PREFIX) :].split("__")]
        if not all(path):
            raise SettingsError(f"environment variable {name}: empty key segment")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise SettingsError(f"environment variable {name}: value is not valid YAML: {exc}") from None
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = value
    return tree


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config/defaults.yaml)"
        lines.append(f"  {key}: {msg}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(
    path: Optional[str | os.PathLike[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Settings:
    """Load and validate settings.

    :arg path: settings file layered over the defaults; when None,
        ``$PAYWATCH_CONFIG`` is used if set.
    :arg environ: environment to read overrides from (default ``os.environ``).
    :arg overrides: a last layer, for tests and tools that build settings in code.
    :raises SettingsError: naming the key at fault.
    """
    environ = os.environ if environ is None else environ
    data = _read_yaml(DEFAULTS_PATH)
    file_path = path if path is not None else environ.get(CONFIG_ENV)
    if file_path:
        data = deep_merge(data, _read_yaml(Path(file_path)))
    data = deep_merge(data, env_overrides(environ))
    if overrides:
        data = deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
