"""One way to build test settings: quiet stdout, JSONL output where asked, overrides on top."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import yaml

from config import Settings, load_settings

#: Stdout sinks off: a test reads the JSONL files, and a long run would flood the captured output.
QUIET_STDOUT = {"alerts": False, "metrics": False, "dead_letters": False}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` layered on ``base`` key by key, as the settings loader layers files."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def settings_tree(out: Optional[Path | str] = None, **sections: Any) -> dict[str, Any]:
    """Quiet stdout, JSONL files in ``out`` (if given), then ``sections`` over them."""
    tree: dict[str, Any] = {"sinks": {"stdout": dict(QUIET_STDOUT)}}
    if out is not None:
        tree["sinks"]["jsonl"] = {"dir": str(out)}
    return merged(tree, sections)


def write_config(path: Path, out: Optional[Path | str] = None, **sections: Any) -> Path:
    """A settings file at ``path`` for ``PAYWATCH_CONFIG`` (see :func:`settings_tree`)."""
    path.write_text(yaml.safe_dump(settings_tree(out, **sections)))
    return path


def settings_for(out: Optional[Path | str] = None, **sections: Any) -> Settings:
    """The same settings in memory, ignoring the environment."""
    return load_settings(environ={}, overrides=settings_tree(out, **sections))
