"""The Helm chart, checked with a real Helm binary and the Kubernetes schemas.

What must hold for Bytewax on a StatefulSet: replicas = processes; every
pod derives its process id from its name exactly as ``bytewax.run`` does;
the address list (hostfile) names each pod of the headless Service in
process-id order and follows the replica count; plus the hardening.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from config import load_settings
from tests.support.k8s_tools import CHART, checkov, helm, render, render_error

#: Every test renders the chart with the real Helm binary (a subprocess).
pytestmark = pytest.mark.integration

KUBERNETES_VERSION = "1.33.0"  # EKS standard support at the time of writing
CRD_KINDS = {"ServiceMonitor"}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str, suffix: str = "") -> dict:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(sts: dict, name: str = "paywatch") -> dict:
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def test_helm_lint():
    result = helm("lint", "--strict", "--namespace", "paywatch", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["processes=1"],
        ["processes=3", "workersPerProcess=2"],
        ["metrics.serviceMonitor.enabled=true", "recovery.enabled=false"],
        ["metrics.bytewaxApi.enabled=false", "metrics.serviceMonitor.enabled=true"],
    ],
)
def test_every_object_validates_against_the_kubernetes_schema(sets):
    objects = render(sets=sets)
    assert {"StatefulSet", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"} <= {
        o["kind"] for o in objects
    }
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("processes", [1, 3])
def test_process_ids_addresses_and_headless_service_agree(processes, tmp_path, monkeypatch):
    namespace = "payments"
    objects = render(namespace=namespace, sets=[f"processes={processes}"])
    sts = one(objects, "StatefulSet")
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    assert spec["replicas"] == processes
    assert spec["podManagementPolicy"] == "Parallel"

    headless = next(s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None")
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "cluster")

    main = container(sts)
    env = env_of(main)
    assert env["BYTEWAX_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["BYTEWAX_STATEFULSET_NAME"] == name
    assert "BYTEWAX_PROCESS_ID" not in env and "BYTEWAX_ADDRESSES" not in env
    assert {"containerPort": port, "name": "cluster", "protocol": "TCP"} in main["ports"]

    # The hostfile comes from the ConfigMap mounted where BYTEWAX_HOSTFILE_PATH points.
    hostfile_path = Path(env["BYTEWAX_HOSTFILE_PATH"])
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == str(hostfile_path.parent))
    volume = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    hosts = one(objects, "ConfigMap", volume["configMap"]["name"][-6:])
    assert hosts["metadata"]["name"] == volume["configMap"]["name"]
    lines = hosts["data"][hostfile_path.name].splitlines()
    expected = [
        f"{name}-{i}.{headless['metadata']['name']}.{namespace}.svc.cluster.local:{port}" for i in range(processes)
    ]
    assert lines == expected

    # What bytewax.run itself derives in pod i from this wiring.
    import bytewax.run

    (tmp_path / hostfile_path.name).write_text(hosts["data"][hostfile_path.name])
    for i in range(processes):
        monkeypatch.setattr(sys, "argv", ["bytewax.run", "dataflow"])
        monkeypatch.setenv("BYTEWAX_POD_NAME", f"{name}-{i}")
        monkeypatch.setenv("BYTEWAX_STATEFULSET_NAME", env["BYTEWAX_STATEFULSET_NAME"])
        monkeypatch.setenv("BYTEWAX_HOSTFILE_PATH", str(tmp_path / hostfile_path.name))
        monkeypatch.setenv("BYTEWAX_WORKERS_PER_PROCESS", env["BYTEWAX_WORKERS_PER_PROCESS"])
        monkeypatch.setenv("BYTEWAX_SNAPSHOT_INTERVAL", env["BYTEWAX_SNAPSHOT_INTERVAL"])
        monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", env["BYTEWAX_RECOVERY_DIRECTORY"])
        monkeypatch.setenv("BYTEWAX_RECOVERY_BACKUP_INTERVAL", env["BYTEWAX_RECOVERY_BACKUP_INTERVAL"])
        args = bytewax.run._parse_args()
        assert args.process_id == i
        assert args.addresses.split(";") == expected
        assert args.addresses.split(";")[i].startswith(f"{name}-{i}.")
        assert str(args.recovery_directory) == env["BYTEWAX_RECOVERY_DIRECTORY"]


def test_workers_per_process_and_extra_args_come_from_values():
    sts = one(render(sets=["workersPerProcess=4"], set_json=['extraArgs=["-s","5"]']), "StatefulSet")
    main = container(sts)
    assert env_of(main)["BYTEWAX_WORKERS_PER_PROCESS"] == "4"
    assert main["args"] == ["-s", "5"]
    assert "command" not in main  # the image's ENTRYPOINT: python -m bytewax.run dataflow


@pytest.mark.parametrize("processes", [1, 2, 3])  # 2 = the default
def test_hardening(processes):
    objects = render(sets=[f"processes={processes}"])
    assert one(objects, "StatefulSet")["spec"]["replicas"] == processes
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        csc = c["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in csc["capabilities"]
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Writable only where needed: /tmp (emptyDir) and the recovery volume.
    writable = {m["mountPath"] for m in container(one(objects, "StatefulSet"))["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", "/var/lib/paywatch/recovery"}
    zones = [t for t in pod["topologySpreadConstraints"] if t["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zones and zones[0]["maxSkew"] == 1
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    main = container(one(objects, "StatefulSet"))
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_metrics_service_annotations_and_service_monitor():
    objects = render(sets=["metrics.serviceMonitor.enabled=true", "metrics.port=9200"])
    sts = one(objects, "StatefulSet")
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9200"
    assert env_of(container(sts))["PAYWATCH__METRICS__PORT"] == "9200"
    svc = one(objects, "Service", "-metrics")
    assert svc["spec"]["ports"][0]["port"] == 9200
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert not by_kind(render(), "ServiceMonitor")


def test_bytewax_api_env_port_services_and_service_monitor_endpoint():
    """Bytewax's own metrics (bytewax_*) are on by default, on every discovery path."""
    objects = render(sets=["metrics.serviceMonitor.enabled=true", "metrics.bytewaxApi.port=3031"])
    sts = one(objects, "StatefulSet")
    main = container(sts)
    env = env_of(main)
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
    assert env["BYTEWAX_DATAFLOW_API_PORT"] == "3031"
    assert {"containerPort": 3031, "name": "bytewax-api", "protocol": "TCP"} in main["ports"]
    # Bytewax writes dataflow.json there at start and exits if it cannot:
    # it must be a writable mount (the root filesystem is read-only).
    writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
    assert env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] in writable
    assert main["securityContext"]["readOnlyRootFilesystem"] is True

    # The ServiceMonitor's Service carries both ports; its second endpoint
    # scrapes Bytewax's port and keeps only bytewax_ series.
    svc = one(objects, "Service", "-metrics")
    assert {"name": "bytewax-api", "port": 3031, "targetPort": "bytewax-api", "protocol": "TCP"} in svc["spec"]["ports"]
    monitor = one(objects, "ServiceMonitor")
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert set(endpoints) == {"metrics", "bytewax-api"}
    assert endpoints["bytewax-api"]["path"] == "/metrics"
    assert endpoints["bytewax-api"]["metricRelabelings"] == [
        {"sourceLabels": ["__name__"], "regex": "bytewax_.*", "action": "keep"},
        {"sourceLabels": ["__name__"], "regex": "bytewax_partd_write_duration_seconds_.*", "action": "drop"},
    ]
    port_names = {p["name"] for p in main["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names

    # Annotation-based discovery: the pods' annotations name the paywatch
    # port; a second Service, annotated for the Bytewax port and with that one
    # port, selects the same pods, and no ServiceMonitor selects it.
    pod_annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert pod_annotations["prometheus.io/port"] == env["PAYWATCH__METRICS__PORT"]
    annotated = one(objects, "Service", "-bytewax-api")
    assert annotated["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "3031",
        "prometheus.io/path": "/metrics",
    }
    assert [(p["port"], p["targetPort"]) for p in annotated["spec"]["ports"]] == [(3031, "bytewax-api")]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert annotated["spec"]["selector"].items() <= pod_labels.items()
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= annotated["metadata"]["labels"].items()
    assert "annotations" not in svc["metadata"]


def test_bytewax_api_off_renders_no_variable_port_or_endpoint():
    """Bytewax starts its server when the variable exists at all, so off = absent."""
    objects = render(sets=["metrics.serviceMonitor.enabled=true", "metrics.bytewaxApi.enabled=false"])
    main = container(one(objects, "StatefulSet"))
    assert not [name for name in env_of(main) if name.startswith("BYTEWAX_DATAFLOW_API")]
    assert [p["name"] for p in main["ports"]] == ["cluster", "metrics"]
    assert [p["name"] for p in one(objects, "Service", "-metrics")["spec"]["ports"]] == ["metrics"]
    assert [e["port"] for e in one(objects, "ServiceMonitor")["spec"]["endpoints"]] == ["metrics"]
    assert not [s for s in by_kind(objects, "Service") if s["metadata"]["name"].endswith("-bytewax-api")]
    # Without annotation-based discovery there is no annotated Service either.
    plain = render(sets=["metrics.podAnnotations=false"])
    assert not [s for s in by_kind(plain, "Service") if s["metadata"]["name"].endswith("-bytewax-api")]
    assert "bytewax-api" in {p["name"] for p in container(one(plain, "StatefulSet"))["ports"]}


@pytest.mark.parametrize(
    "sets",
    [
        ["metrics.bytewaxApi.port=9100"],
        ["metrics.bytewaxApi.port=2101"],
        ["metrics.port=2101", "metrics.bytewaxApi.enabled=false"],
    ],
)
def test_ports_of_a_pod_must_differ(sets):
    assert "must differ" in render_error(sets)


def test_config_map_checksum_rolls_pods_and_irsa_annotation():
    base = one(render(), "StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = render(
        sets=[
            "config.rules.failure_rate.threshold_percent=5",
            "serviceAccount.roleArn=arn:aws:iam::123456789012:role/paywatch",
        ]
    )
    assert one(changed, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != base
    scaled = one(render(sets=["processes=3"]), "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert scaled["checksum/config"] != base
    cfg = yaml.safe_load(one(changed, "ConfigMap", "-config")["data"]["paywatch.yaml"])
    assert cfg["rules"]["failure_rate"]["threshold_percent"] == 5
    sa = one(changed, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/paywatch"


def test_default_config_is_valid_paywatch_settings(tmp_path):
    cm = one(render(), "ConfigMap", "-config")
    path = tmp_path / "paywatch.yaml"
    path.write_text(cm["data"]["paywatch.yaml"])
    settings = load_settings(path, environ={"PAYWATCH__METRICS__PORT": "9100"})
    assert settings.metrics.port == 9100


@pytest.mark.parametrize(
    "bad",
    [
        ["processes=0"],
        ["processes=two"],
        ["workersPerProcess=0"],
        ["metrics.port=80"],
        ["recovery.partitions=0"],
        ["recovery.snapshotIntervalSeconds=0"],
        ["image.pullPolicy=Sometimes"],
        ["image.digest=latest"],
        ["serviceAccount.roleArn=paywatch-role"],
        ["config.source.type=carrier-pigeon"],
        ["config.metrics.port=1"],
        ["fullnameOverride=Not_A_DNS_Name"],
        ["proccesses=2"],
        ["resources.requests.cpu=lots"],
        ["metrics.bytewaxApi.port=80"],
        ["metrics.bytewaxApi.enabled=yes"],
        ["metrics.bytewaxApi.prot=3030"],
        ["liveRules.enabled=yes"],
        ["liveRules.rulez.fraud.merchant_points=1"],
    ],
)
def test_bad_values_are_rejected_by_the_schema(bad):
    error = render_error(bad)
    assert "schema" in error.lower() or "at '/" in error


def _init_script(objects: list[dict]) -> str:
    init = one(objects, "StatefulSet")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["command"] == ["sh", "-c"]
    return init["args"][0]


def test_recovery_init_creates_partitions_once_for_parallel_pods(tmp_path):
    """Run the rendered init script as 3 pods starting together on one shared directory."""
    script = _init_script(render(sets=["processes=3", "recovery.partitions=6"]))
    shared = tmp_path / "recovery"
    shared.mkdir()
    bin_dir = Path(sys.executable).parent  # `python` of this venv, as in the image

    def run(pod: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "BYTEWAX_POD_NAME": pod,
            "BYTEWAX_RECOVERY_DIRECTORY": str(shared),
            "PAYWATCH_RECOVERY_PARTITIONS": "6",
            "PAYWATCH_RECOVERY_INIT_TIMEOUT": "60",
        }
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=90)

    results: dict[str, subprocess.CompletedProcess] = {}
    threads = [
        threading.Thread(target=lambda p=p: results.__setitem__(p, run(p)))
        for p in ("paywatch-2", "paywatch-1", "paywatch-0")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for pod, result in results.items():
        assert result.returncode == 0, (pod, result.stderr)
        assert "recovery: 6 partitions" in result.stdout
    parts = sorted(p.name for p in shared.glob("part-*.sqlite3"))
    assert parts == [f"part-{i}.sqlite3" for i in range(6)]
    before = {p: p.stat().st_mtime_ns for p in shared.glob("part-*")}

    # A restart, or a later upgrade asking for more partitions, keeps what exists.
    again = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "BYTEWAX_POD_NAME": "paywatch-0",
            "BYTEWAX_RECOVERY_DIRECTORY": str(shared),
            "PAYWATCH_RECOVERY_PARTITIONS": "8",
            "PAYWATCH_RECOVERY_INIT_TIMEOUT": "60",
        },
    )
    assert again.returncode == 0
    assert "the 6 created at first install are kept" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in shared.glob("part-*")} == before


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("sets", "skipped"),
    [
        (["processes=3"], {"CKV_K8S_43"}),  # no digest: pinned by tag, skipped with its reason
        (["processes=3", f"image.digest={DIGEST}"], set()),  # a digest: every check applies
    ],
)
def test_checkov_passes_the_rendered_chart(sets, skipped, tmp_path):
    """checkov 3.3.30, offline, on ``helm template pw k8s/paywatch --namespace paywatch --set processes=3``."""
    args = ["template", "pw", str(CHART), "--namespace", "paywatch"]
    for item in sets:
        args += ["--set", item]
    report = checkov(helm(*args).stdout, tmp_path / "checkov")
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 90  # the policies really ran
    assert {c["check_id"] for c in results["skipped_checks"]} == skipped
    for check in results["skipped_checks"]:
        assert "set image.digest" in check["check_result"]["suppress_comment"]  # a written reason


def test_network_policy_admits_only_peers_and_scrapers():
    objects = render(sets=["processes=3"])
    policy = one(objects, "NetworkPolicy")
    sts = one(objects, "StatefulSet")
    assert policy["spec"]["podSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    cluster, scrape = policy["spec"]["ingress"]
    assert cluster["from"] == [{"podSelector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]}}]
    assert [p["port"] for p in cluster["ports"]] == [2101]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert sorted(p["port"] for p in scrape["ports"]) == [3030, 9100]
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["spec"]["egress"]]
    assert egress_ports == [[2101], [53, 53], [443]]  # peers, DNS, AWS; no Kafka peers listed by default

    kafka = render(
        sets=["networkPolicy.egress.restrict=true", "networkPolicy.metricsFrom=null"],
        set_json=['networkPolicy.egress.kafka={"to":[{"ipBlock":{"cidr":"10.0.16.0/20"}}],"ports":[9098]}'],
    )
    rules = one(kafka, "NetworkPolicy")["spec"]
    assert len(rules["ingress"]) == 1  # no scraper allowed: only the peers
    assert {"to": [{"ipBlock": {"cidr": "10.0.16.0/20"}}], "ports": [{"port": 9098, "protocol": "TCP"}]} in rules[
        "egress"
    ]

    assert by_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy") == []


def test_digest_wins_over_the_tag_and_sets_the_pull_policy():
    tagged = container(one(render(sets=["image.tag=1.2.3"]), "StatefulSet"))
    assert (tagged["image"], tagged["imagePullPolicy"]) == ("paywatch:1.2.3", "Always")
    sts = one(render(sets=["image.tag=1.2.3", f"image.digest={DIGEST}"]), "StatefulSet")
    pinned = container(sts)
    assert (pinned["image"], pinned["imagePullPolicy"]) == (f"paywatch@{DIGEST}", "IfNotPresent")
    assert "checkov.io/skip1" not in sts["metadata"].get("annotations", {})
    chosen = container(one(render(sets=["image.pullPolicy=Never"]), "StatefulSet"))
    assert chosen["imagePullPolicy"] == "Never"


def test_every_object_names_its_namespace_and_default_is_refused():
    for obj in render(namespace="paywatch"):
        assert obj["metadata"]["namespace"] == "paywatch", obj["metadata"]["name"]
    result = helm("template", "pw", str(CHART), check=False)
    assert result.returncode != 0
    assert "namespace of its own" in result.stderr


def test_live_rules_config_map_is_mounted_as_a_directory_and_does_not_roll_pods(tmp_path):
    objects = render(sets=["liveRules.rules.failure_rate.threshold_percent=5"])
    sts = one(objects, "StatefulSet")
    main = container(sts)
    assert env_of(main)["PAYWATCH__RULES_FILE"] == "/etc/paywatch/rules/rules.yaml"
    [mount] = [m for m in main["volumeMounts"] if m["name"] == "rules"]
    assert mount["mountPath"] == "/etc/paywatch/rules" and "subPath" not in mount  # subPath never updates
    [volume] = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "rules"]
    assert volume["configMap"]["name"] == one(objects, "ConfigMap", "-rules")["metadata"]["name"]
    # The rules document is what a process reads and validates.
    from config.live_rules import parse_rules_document

    text = one(objects, "ConfigMap", "-rules")["data"]["rules.yaml"]
    base = load_settings(environ={}).rules
    assert parse_rules_document(text, base).failure_rate.threshold_percent == 5
    assert parse_rules_document(one(render(), "ConfigMap", "-rules")["data"]["rules.yaml"], base) == base
    # New rules change the ConfigMap only, never the pod template (no restart).
    assert sts["spec"]["template"] == one(render(), "StatefulSet")["spec"]["template"]
    off = render(sets=["liveRules.enabled=false"])
    assert not [o for o in by_kind(off, "ConfigMap") if o["metadata"]["name"].endswith("-rules")]
    assert "PAYWATCH__RULES_FILE" not in env_of(container(one(off, "StatefulSet")))
