"""docs/configuration.md names every setting of config/defaults.yaml, and only those."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = ROOT / "config" / "defaults.yaml"
PAGE = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `([A-Za-z0-9_.]+)` \|", re.MULTILINE)


def _settings(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of the defaults by dotted path (an empty mapping is a leaf: a setting that holds a dict)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_settings(value, f"{path}."))
        else:
            out[path] = value
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return "`" + json.dumps(value, separators=(", ", ": ")).replace('"', "") + "`"
    return f"`{value}`"


def test_every_setting_has_a_row():
    settings = _settings(yaml.safe_load(DEFAULTS.read_text()))
    documented = set(ROW.findall(PAGE.read_text()))
    missing = [key for key in settings if key not in documented]
    rows = "\n".join(
        f"  under '## {key.split('.')[0]}': | `{key}` | {_shown(settings[key])} | what it does; when to change it |"
        for key in missing
    )
    assert not missing, f"docs/configuration.md has no row for {len(missing)} setting(s); add:\n{rows}"


def test_every_row_names_a_setting():
    settings = _settings(yaml.safe_load(DEFAULTS.read_text()))
    stale = [key for key in ROW.findall(PAGE.read_text()) if key not in settings]
    assert not stale, f"docs/configuration.md documents settings config/defaults.yaml no longer has: {stale}"


def test_every_row_says_what_the_setting_does():
    text = PAGE.read_text()
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)` \| (.*?) \| (.*?) \|$", text, re.MULTILINE)
    assert len(rows) == len(ROW.findall(text)), "keep every row in the form | `key` | default | text |"
    blank = [key for key, _default, says in rows if len(says) < 10]
    assert not blank, f"say what these do and when to change them: {blank}"


def test_the_defaults_file_points_at_the_page():
    assert "docs/configuration.md" in DEFAULTS.read_text().split("\n\n", 1)[0]
    assert PAGE.exists()


def test_the_missing_row_message_names_the_key_and_its_default():
    settings = _settings({"sinks": {"new": {"size": 3, "tags": {}}}})
    assert settings == {"sinks.new.size": 3, "sinks.new.tags": {}}
    assert _shown([1, "a"]) == "`[1, a]`" and _shown(None) == "`null`" and _shown(True) == "`true`"
