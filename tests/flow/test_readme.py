"""The README's commands do what the README says they do."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from config import load_settings
from tests.support.flow import run_in_process
from tests.support.output import jsonl_records

README = Path(__file__).resolve().parents[2] / "README.md"
EVERY_KIND = {"FAILURE_RATE", "TRAFFIC_DROP", "VELOCITY", "AMOUNT_SPIKE", "IMPOSSIBLE_TRAVEL", "FRAUD_SUSPECTED"}


def _incident_example() -> dict[str, str]:
    """The environment of the README's "incidents of every kind" command."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    [command] = [b for b in blocks if "SCENARIO=mixed" in b]
    words = shlex.split(command.replace("\\\n", " "))
    return dict(w.split("=", 1) for w in words if "=" in w and w.startswith("PAYWATCH__"))


@pytest.mark.integration  # the whole 300,000-event run: not part of the fast unit set
def test_the_incident_example_raises_alerts_of_every_kind(tmp_path):
    env = _incident_example()
    assert env["PAYWATCH__SINKS__JSONL__DIR"] == "out"
    env["PAYWATCH__SINKS__JSONL__DIR"] = str(tmp_path / "out")
    quiet = {"sinks": {"stdout": {"alerts": False, "metrics": False, "dead_letters": False}}}
    run_in_process(load_settings(environ=env, overrides=quiet))
    alerts = jsonl_records(tmp_path / "out", "alerts")
    assert {a["type"] for a in alerts} == EVERY_KIND
    opened = {a["incident_id"] for a in alerts if a["type"] == "FAILURE_RATE" and a["state"] == "OPEN"}
    resolved = {a["incident_id"] for a in alerts if a["type"] == "FAILURE_RATE" and a["state"] == "RESOLVED"}
    assert opened and opened == resolved
