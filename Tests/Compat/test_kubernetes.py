"""The Kubernetes files (Deploy/kubernetes): both overlays render with
kustomize (`kubectl kustomize`), pass kubernetes-validate in strict mode
against a current Kubernetes version, and keep the promises
Docs/deploy-kubernetes.md makes: non-root, read-only root file systems, no
capabilities, RuntimeDefault seccomp, requests and limits, probes on
/health and /ready, a disruption budget for every workload, network
policies that deny by default, TLS from cert-manager-shaped Secrets, the
authorizer on, and only settings the programs have."""
import os
import subprocess

import pytest
import yaml

from conftest import ROOT
from test_deploy import etcd_flags, help_text

KUBERNETES = os.path.join(ROOT, "Deploy", "kubernetes")
OVERLAYS = ["single-node", "cluster"]
KUBERNETES_VERSION = "1.37.0"
VALIDATE = os.path.join(ROOT, ".venv", "bin", "kubernetes-validate")


def render(overlay):
    result = subprocess.run(["kubectl", "kustomize", os.path.join(KUBERNETES, "overlays", overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory):
    text = render(request.param)
    path = tmp_path_factory.mktemp("kubernetes") / ("%s.yaml" % request.param)
    path.write_text(text)
    documents = [document for document in yaml.safe_load_all(text) if document]
    return request.param, str(path), documents


def of_kind(documents, *kinds):
    return [document for document in documents if document["kind"] in kinds]


def validate(path):
    return subprocess.run([VALIDATE, "--strict", "--kubernetes-version", KUBERNETES_VERSION, "--quiet", path],
                          capture_output=True, text=True, timeout=120)


def test_each_overlay_passes_strict_validation(rendered):
    _, path, documents = rendered
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(documents) >= 15


def test_strict_validation_refuses_a_field_kubernetes_does_not_have(rendered, tmp_path):
    _, _, documents = rendered
    broken = [dict(document) for document in documents]
    statefulset = next(document for document in broken if document["kind"] == "StatefulSet")
    statefulset["spec"] = dict(statefulset["spec"], replicaCount=3)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken))
    assert validate(str(path)).returncode != 0


def test_workloads_run_confined(rendered):
    _, _, documents = rendered
    workloads = of_kind(documents, "StatefulSet", "Deployment")
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), (name, part)
            assert container["livenessProbe"] and container["readinessProbe"], name
            assert ":" in container["image"] and not container["image"].endswith(":latest"), container["image"]


def test_brokers_and_gateways_are_probed_on_health_and_ready(rendered):
    _, _, documents = rendered
    for workload in of_kind(documents, "StatefulSet", "Deployment"):
        if workload["metadata"]["name"] == "postduif-etcd":
            continue
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_every_workload_has_a_disruption_budget(rendered):
    _, _, documents = rendered
    budgets = [budget["spec"]["selector"]["matchLabels"] for budget in of_kind(documents, "PodDisruptionBudget")]
    for workload in of_kind(documents, "StatefulSet", "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(key) == value for key, value in selector.items()) for selector in budgets), workload["metadata"]["name"]


def test_network_policies_deny_by_default_and_cover_every_pod(rendered):
    _, _, documents = rendered
    policies = of_kind(documents, "NetworkPolicy")
    deny = [policy for policy in policies if policy["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    for workload in of_kind(documents, "StatefulSet", "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [policy for policy in policies if policy["spec"]["podSelector"].get("matchLabels")
               and all(labels.get(key) == value for key, value in policy["spec"]["podSelector"]["matchLabels"].items())
               and "ingress" in policy["spec"]]
        assert own, "%s has no policy letting anything in" % workload["metadata"]["name"]


def test_tls_comes_from_cert_manager_shaped_secrets_and_the_authorizer_is_on(rendered):
    _, _, documents = rendered
    broker = next(document for document in of_kind(documents, "ConfigMap") if document["metadata"]["name"] == "postduif-broker")["data"]
    assert broker["POSTDUIF_AUTHORIZER"] == "true" and broker["POSTDUIF_SASL"] == "true"
    assert broker["POSTDUIF_LISTENERS"].startswith("SASL_SSL://")
    assert [broker[key].rsplit("/", 1)[1] for key in ("POSTDUIF_TLS_CERT_FILE", "POSTDUIF_TLS_KEY_FILE", "POSTDUIF_TLS_CA_FILE")] == ["tls.crt", "tls.key", "ca.crt"]
    for workload in of_kind(documents, "StatefulSet", "Deployment"):
        volumes = {volume["name"]: volume for volume in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["tls"]["secret"]["secretName"].endswith("-tls"), workload["metadata"]["name"]


def test_every_setting_is_one_the_programs_have(rendered):
    _, _, documents = rendered
    serve, gateway, flags = help_text("serve"), help_text("gateway"), etcd_flags()
    for config in of_kind(documents, "ConfigMap"):
        documented = gateway if config["metadata"]["name"] == "postduif-gateway" else serve
        for name in config["data"]:
            assert name in documented, "%s (%s) is not an option" % (name, config["metadata"]["name"])
    for workload in of_kind(documents, "StatefulSet", "Deployment"):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        documented = gateway if workload["metadata"]["name"] == "postduif-gateway" else serve
        for variable in container.get("env", []):
            name = variable["name"]
            if name.startswith("POSTDUIF_"):
                assert name in documented, name
            elif name.startswith("ETCD_"):
                assert name[5:].lower().replace("_", "-") in flags, name


def test_the_cluster_overlay_makes_three_brokers_on_three_etcd_members():
    documents = [document for document in yaml.safe_load_all(render("cluster")) if document]
    sets = {document["metadata"]["name"]: document for document in of_kind(documents, "StatefulSet")}
    assert sets["postduif-broker"]["spec"]["replicas"] == 3 and sets["postduif-etcd"]["spec"]["replicas"] == 3
    broker = next(document for document in of_kind(documents, "ConfigMap") if document["metadata"]["name"] == "postduif-broker")["data"]
    assert len(broker["POSTDUIF_ETCD_ENDPOINTS"].split(",")) == 3
    assert broker["POSTDUIF_DEFAULT_REPLICATION_FACTOR"] == "3" and broker["POSTDUIF_MIN_INSYNC_REPLICAS"] == "2"
    assert all(document["metadata"].get("namespace") == "postduif" for document in documents if document["kind"] != "Namespace")
    single = [document for document in yaml.safe_load_all(render("single-node")) if document]
    assert "postduif-etcd" not in {document["metadata"]["name"] for document in of_kind(single, "StatefulSet")}
