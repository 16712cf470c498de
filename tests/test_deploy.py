"""Static checks of deploy/: Docker cannot run here, so the manifests are parsed and their
invariants checked — what would break a rollout or leak a secret if it regressed."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import pytest

from voicebot.config import Settings
from voicebot.drain import stop_budget

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRET_NAMES = {
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "META_APP_SECRET",
    "META_ACCESS_TOKEN",
    "META_VERIFY_TOKEN",
    "VOICEBOT_OPERATOR_TOKEN",
}


def k8s_docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None or doc.get("kind") == "Kustomization":
                continue
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_web_deployment_probes_drain_and_scale() -> None:
    docs = k8s_docs()
    web = docs[("Deployment", "voicebot-web")]
    c = container(web)
    assert c["args"] == ["serve"] and c["image"].startswith("voicebot:")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pod = web["spec"]["template"]["spec"]
    # preStop + the whole drain (calls, turns, goodbye, close) must fit in the grace period.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + stop_budget(configmap_settings())
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = docs[("Service", "voicebot-web")]
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    hpa = docs[("HorizontalPodAutoscaler", "voicebot-web")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "voicebot-web"
    assert hpa["spec"]["minReplicas"] >= 2
    ingress = docs[("Ingress", "voicebot")]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "voicebot-web" and ingress["spec"]["tls"]


def configmap_settings() -> Settings:
    data = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]
    return Settings.load(env=data)


def test_worker_requests_a_gpu_and_drains() -> None:
    docs = k8s_docs()
    worker = docs[("Deployment", "voicebot-worker")]
    c = container(worker)
    assert c["args"][0] == "worker" and "cuda" in c["image"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    drain = int(yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"][
        "VOICEBOT_WORKER_DRAIN_SECONDS"
    ])  # fmt: skip
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def test_redis_is_a_statefulset_with_aof_on_a_volume() -> None:
    docs = k8s_docs()
    redis = docs[("StatefulSet", "redis")]
    c = container(redis)
    assert "--appendonly" in c["args"] and c["args"][c["args"].index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert (
        docs[("Service", "redis")]["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    )


def test_no_secret_is_inlined_in_kubernetes() -> None:
    docs = k8s_docs()
    assert not [k for k in docs if k[0] == "Secret"], "Secrets are created out of band"
    config = docs[("ConfigMap", "voicebot-config")]["data"]
    assert not SECRET_NAMES & config.keys() and "VOICEBOT_REDIS_URL" not in config
    for kind, name in docs:
        if kind != "Deployment":
            continue
        c = container(docs[(kind, name)])
        assert {"secretRef": {"name": "voicebot-secrets"}} in c["envFrom"]
        assert not SECRET_NAMES & {e["name"] for e in c.get("env", [])}


def test_compose_services_reference_each_other() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"proxy", "web", "worker", "redis"} <= services.keys()
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith("./") or source in compose["volumes"], volume
    assert services["web"]["command"] == ["serve"]
    grace = int(services["web"]["stop_grace_period"].removesuffix("s"))
    assert grace > stop_budget(Settings.load(env={}))  # deploy/.env from env.example: 25 s
    assert services["worker"]["command"][0] == "worker"
    assert "--appendonly" in services["redis"]["command"]
    url = services["web"]["environment"]["VOICEBOT_REDIS_URL"]
    assert url.startswith("redis://redis:")
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    for svc in (services["web"], services["worker"]):
        assert svc["env_file"] == ".env"
        assert not SECRET_NAMES & set(svc.get("environment", {}))
    caddy = (DEPLOY / "Caddyfile").read_text()
    assert "reverse_proxy web:8080" in caddy and "X-Forwarded-Proto" in caddy


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_are_multi_stage_and_run_unprivileged(name: str) -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / name).read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    instructions = [line.split()[0] for line in lines]
    known = {"FROM", "RUN", "COPY", "WORKDIR", "ENV", "USER", "EXPOSE", "ENTRYPOINT", "CMD",
             "HEALTHCHECK", "ARG"}  # fmt: skip
    assert set(instructions) <= known, set(instructions) - known
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and all(" AS " in s for s in stages)
    names = {s.split(" AS ")[1].strip() for s in stages}
    for line in lines:
        match = re.match(r"COPY --from=(\S+)", line)
        if match:
            assert match.group(1) in names, line
    assert instructions[-1] == "CMD" and "USER" in instructions
    assert "voicebot models prepare" in " ".join(lines)  # models baked in
    assert not re.search(r"(TOKEN|SECRET)=\S", " ".join(lines))


def test_systemd_unit_and_env_example() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "voicebot.service").read_text())
    assert unit["Service"]["ExecStart"].split()[1] == "serve"
    assert unit["Service"]["EnvironmentFile"].startswith("/etc/")
    budget = stop_budget(Settings.load(env={}))  # the unit reads /etc/voicebot/env: defaults
    assert int(unit["Service"]["TimeoutStopSec"]) > budget
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert all(env[name] == "" for name in SECRET_NAMES), "env.example must hold no secret"
    settings = Settings.load(env={k: v for k, v in env.items() if k.startswith("VOICEBOT_")})
    assert settings.backend == "redis" and settings.redis_url.startswith("redis://")
    assert int(unit["Service"]["TimeoutStopSec"]) > stop_budget(settings)
