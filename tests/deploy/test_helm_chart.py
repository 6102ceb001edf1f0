"""Rendered-manifest tests of the Helm chart (helm template with real value sets); the chart is
also linted and schema-validated against Kubernetes in scripts/check_deploy.sh."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import ROOT, helm_template, render

pytestmark = pytest.mark.integration
CI = ROOT / "deploy/helm/ci"
P = "krl-knapsack-rl"


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _container(m: dict) -> dict:
    return m["spec"]["template"]["spec"]["containers"][0]


def test_defaults_bundle_redis_and_wire_every_service():
    m = render("-f", str(CI / "default.yaml"))
    alloc = m[("Deployment", f"{P}-allocator")]
    assert alloc["spec"]["replicas"] == 2
    env = _env(_container(alloc))
    assert env["REDIS_URL"]["value"] == f"redis://{P}-redis:6379/0"
    assert env["KRL_ALLOCATOR_HOST"]["value"] == "0.0.0.0"
    assert env["KRL_ALLOCATOR_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"{P}-auth"
    assert ("StatefulSet", f"{P}-redis") in m and ("Service", f"{P}-redis") in m
    redis = _container(m[("StatefulSet", f"{P}-redis")])
    assert "--appendonly" in redis["args"]
    secret = m[("Secret", f"{P}-auth")]
    assert len(secret["data"]["token"]) >= 40  # a random token, base64
    assert m[("PodDisruptionBudget", f"{P}-allocator")]["spec"]["minAvailable"] == 1
    assert ("HorizontalPodAutoscaler", f"{P}-allocator") not in m
    # the trainer: a Job on a kept PVC, talking to the release's services with the token
    job = m[("Job", f"{P}-trainer")]
    tenv = _env(_container(job))
    assert tenv["KRL_TRAINER_ALLOCATOR"]["value"] == f"{P}-allocator:50051"
    # every rollout pod, through the headless Service (krl.clients.fleet)
    assert tenv["KRL_TRAINER_ROLLOUT"]["value"] == f"dns:///{P}-rollout-headless:50052"
    headless = m[("Service", f"{P}-rollout-headless")]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == m[("Service", f"{P}-rollout")]["spec"]["selector"]
    assert "KRL_TRAINER_PEER_TOKEN" in tenv
    assert "--resume" in _container(job)["args"][0]  # a restarted pod resumes its run
    pvc = m[("PersistentVolumeClaim", f"{P}-trainer")]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # CPU rollout, no GPU asked for
    roll = _container(m[("Deployment", f"{P}-rollout")])
    assert roll["image"].endswith(":0.1.0-cpu") and "nvidia.com/gpu" not in str(roll)
    for kind, name in [
        ("Deployment", f"{P}-allocator"),
        ("Deployment", f"{P}-rollout"),
        ("Job", f"{P}-trainer"),
    ]:
        spec = m[(kind, name)]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        c = spec["containers"][0]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert "requests" in c["resources"]
    assert not any(k == "ServiceMonitor" for k, _ in m)


def test_external_redis_from_a_secret_with_hpa_and_service_monitors():
    m = render("-f", str(CI / "external-redis.yaml"))
    assert not any(k == "StatefulSet" for k, _ in m)
    alloc = m[("Deployment", f"{P}-allocator")]
    env = _env(_container(alloc))
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "krl-redis", "key": "url"}
    assert env["KRL_ALLOCATOR_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "krl-token"
    assert not any(k == "Secret" for k, _ in m)  # the user's Secret is used, none made
    assert "replicas" not in alloc["spec"]  # the HPA owns it
    hpa = m[("HorizontalPodAutoscaler", f"{P}-allocator")]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert not any(k == "Job" for k, _ in m)  # trainer.enabled=false
    monitors = {n for k, n in m if k == "ServiceMonitor"}
    assert monitors == {f"{P}-allocator", f"{P}-rollout"}
    sm = m[("ServiceMonitor", f"{P}-allocator")]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def test_gpu_rollout_with_four_replicas():
    m = render("-f", str(CI / "gpu-rollout.yaml"))
    dep = m[("Deployment", f"{P}-rollout")]
    assert dep["spec"]["replicas"] == 4
    c = _container(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["limits"]["memory"] == "64Gi"
    assert c["image"] == "registry.example.com/ml/knapsack-rl/rollout:0.1.0-vllm"
    env = _env(c)
    assert env["KRL_ROLLOUT_ENGINE__TYPE"]["value"] == "vllm"
    assert env["KRL_ROLLOUT_ENGINE__MODEL"]["value"] == "/models/qwen3-1.7b"
    assert c["volumeMounts"][0]["mountPath"] == "/models"
    assert dep["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    alloc_env = _env(_container(m[("Deployment", f"{P}-allocator")]))
    assert alloc_env["REDIS_URL"]["value"] == "redis://redis.data.svc:6379/0"
    args = _container(m[("Job", f"{P}-trainer")])["args"][0]
    assert "--strategy knapsack-paper '--model' '/data/models/qwen3-1.7b'" in args
    assert "--steps 2000" in args


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "redis.enabled=false"], "redis.url / redis.existingSecret"),
        (["--set", "rollout.engine=vllm"], "rollout.engine=vllm needs rollout.model"),
        (["--set", "rollout.replicas=0"], "replicas"),
        (["--set", "trainer.strategy=greedy"], "strategy"),
        (["--set", "redis.enabled=false", "--set", "redis.url=http://x"], "url"),
        (["--set", "allocatr.replicas=3"], "allocatr"),  # a typo is refused, not ignored
    ],
)
def test_bad_values_are_refused_with_the_reason(args, message):
    res = helm_template(*args, check=False)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


def test_an_auth_token_given_in_values_is_used_and_auth_can_be_off():
    m = render("--set", "auth.token=s3cret-token-for-test")
    import base64

    assert base64.b64decode(m[("Secret", f"{P}-auth")]["data"]["token"]) == b"s3cret-token-for-test"
    m = render("--set", "auth.enabled=false")
    assert not any(k == "Secret" for k, _ in m)
    assert "KRL_ALLOCATOR_AUTH_TOKEN" not in _env(_container(m[("Deployment", f"{P}-allocator")]))
