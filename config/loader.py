"""Builds Settings from defaults.yaml, an optional PAYWATCH_CONFIG file and
PAYWATCH__A__B environment overrides, in that order.

Layering is key by key so that a file holding ``simulator: {rate: 2000}``
keeps every other simulator default. Errors are raised as
:class:`SettingsError` whose message names the offending key, because the
operator reading a crash loop on Kubernetes needs the key, not a traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from config.settings import Settings

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
CONFIG_ENV = "PAYWATCH_CONFIG"
OVERRIDE_PREFIX = "PAYWATCH__"
# Variables Paywatch reads that are not settings overrides.
KNOWN_VARIABLES = {CONFIG_ENV, "PAYWATCH_DEBUG", "PAYWATCH_HASH_KEY"}

logger = logging.getLogger(__name__)

#: libyaml's safe loader where PyYAML has it (its wheels do): the same documents
#: and errors as ``yaml.safe_load``, parsed in C. The pure-Python parser took
#: about 15 ms per read of defaults.yaml, a few per cent of a start.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load(text)``, with libyaml when available.

    :raises yaml.YAMLError: ``text`` is not YAML.
    """
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


class SettingsError(ValueError):
    """The settings cannot be used; the message names the key and the fix."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
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
            value = load_yaml(raw) if raw != "" else None
        except yaml.YAMLError:
            # Not YAML (a glob such as *.jsonl reads as an alias): the plain
            # string, which validation accepts only where a string is expected.
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = value
    return tree


def unmatched_environment(environ: Mapping[str, str], settings: Optional[Settings] = None) -> list[str]:
    """One warning per ``PAYWATCH_*`` variable that is neither a setting nor one Paywatch reads.

    A misspelt override (``PAYWATCH_SIMULATOR_RATE``, one underscore) would
    otherwise be ignored without a word; the warning names the closest key.
    """
    keys = {"PAYWATCH__" + "__".join(path).upper(): ".".join(path) for path in _setting_paths(Settings)}
    known = set(keys) | KNOWN_VARIABLES | (_named_variables(settings) if settings is not None else set())
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("PAYWATCH_") or upper in known or upper.startswith(OVERRIDE_PREFIX):
            continue
        folded = "PAYWATCH__" + upper[len("PAYWATCH_") :].lstrip("_")
        close = difflib.get_close_matches(folded.replace("__", "_"), [k.replace("__", "_") for k in keys], 1, 0.8)
        if close:
            match = next(k for k in keys if k.replace("__", "_") == close[0])
            hint = f"did you mean {match} (setting {keys[match]})?"
        else:
            hint = "overrides are spelt PAYWATCH__SECTION__KEY (two underscores), see config/defaults.yaml"
        warnings.append(f"environment variable {name} is not a Paywatch setting and is ignored: {hint}")
    return warnings


def _named_variables(settings: BaseModel) -> set[str]:
    """Environment variables the settings name (``*_env`` keys: passwords, hash keys)."""
    names: set[str] = set()
    for name, value in settings:
        if isinstance(value, BaseModel):
            names |= _named_variables(value)
        elif name.endswith("_env") and isinstance(value, str):
            names.add(value.upper())
    return names


def _setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(_setting_paths(annotation, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


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
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    for warning in unmatched_environment(environ, settings):
        logger.warning("paywatch: %s", warning)
    return settings


MIN_HASH_KEY_BYTES = 16


def hash_key(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> Optional[bytes]:
    """The HMAC key for ``privacy.hash_fields``, read from the environment variable
    ``privacy.hash_key_env`` names (a key in a settings file would be a secret in a file).

    :returns: None when no field is hashed.
    :raises SettingsError: fields to hash and no key (or a short one), naming the variable.
    """
    privacy = settings.privacy
    if not privacy.hash_fields:
        return None
    environ = os.environ if environ is None else environ
    key = environ.get(privacy.hash_key_env, "").encode()
    if len(key) < MIN_HASH_KEY_BYTES:
        state = "is not set" if not key else f"holds fewer than {MIN_HASH_KEY_BYTES} bytes"
        raise SettingsError(
            f"privacy.hash_fields {privacy.hash_fields} needs a key: the environment variable "
            f"{privacy.hash_key_env} (privacy.hash_key_env) {state}; set it to a secret of at least "
            f"{MIN_HASH_KEY_BYTES} bytes, the same for every process"
        )
    return key
