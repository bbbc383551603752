"""What every command-line tool does before its own work: logging, then settings or a clear refusal."""

from __future__ import annotations

import logging
import sys
from typing import Optional

from config import Settings, SettingsError, load_settings


def load_tool_settings() -> Optional[Settings]:
    """Settings for a tool run, or None after printing why they are invalid (the tool exits 2).

    Logging goes to stderr at INFO, so a tool's JSON result on stdout stays machine-readable.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"settings: {exc}", file=sys.stderr)
        return None
