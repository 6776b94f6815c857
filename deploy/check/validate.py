"""Validates one rendered overlay (the output of `kustomize build`), for scripts/deploy-check.sh.

1. Schemas. Every object of a built-in kind is checked by kubernetes-validate against the strict
   OpenAPI schema of the given Kubernetes version, so an unknown or misplaced field, a wrong type or
   a missing required field fails. Custom resources have no schema there: those listed in
   CUSTOM_SCHEMAS are checked against a schema in deploy/check/schemas/, and an object of any other
   kind fails (kubernetes-validate's own command line only warns about a missing schema).
2. Consistency, which no schema sees: names that must refer to rendered objects (ConfigMaps and
   Secrets with their keys, ServiceAccounts, autoscaler and Service targets), the probes, security
   context and resources every pod must have, and the companions every Picket service needs.

Prints one line per failure and a summary; exits 1 when anything failed.
"""

import argparse
import base64
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

HERE = os.path.dirname(os.path.abspath(__file__))

# (apiVersion, kind) of custom resources -> their schema under deploy/check/schemas/.
CUSTOM_SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-cluster.json",
}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# Long-running workloads must have probes; a Job runs to completion.
PROBED_KINDS = ("Deployment", "StatefulSet")
GRPC_PORT = 50051
ADMIN_PORT = 9090


class Report:
    def __init__(self):
        self.errors = []

    def error(self, obj, message):
        self.errors.append(f"{describe(obj)}: {message}")


def describe(obj):
    if obj is None:
        return "overlay"
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def load(path):
    with open(path, encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def check_schemas(objects, version, report):
    custom = 0
    validators = {}
    for obj in objects:
        if not isinstance(obj, dict) or not all(k in obj for k in ("apiVersion", "kind", "metadata")):
            report.error(None, f"not a Kubernetes object: {str(obj)[:80]}")
            continue
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_SCHEMAS:
            custom += 1
            if key not in validators:
                with open(os.path.join(HERE, "schemas", CUSTOM_SCHEMAS[key]), encoding="utf-8") as f:
                    schema = json.load(f)
                jsonschema.Draft202012Validator.check_schema(schema)
                validators[key] = jsonschema.Draft202012Validator(schema)
            for error in sorted(validators[key].iter_errors(obj), key=lambda e: list(e.path)):
                path = ".".join(str(p) for p in error.path)
                report.error(obj, f"{path}: {error.message}")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            report.error(obj, f"{path}: {error.message}")
        except SchemaNotFoundError:
            report.error(
                obj,
                f"no schema for apiVersion {obj['apiVersion']} in Kubernetes {version}: an unknown "
                "kind or apiVersion, or a custom resource without a schema in deploy/check/schemas",
            )
    return custom


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def pod_labels(obj):
    return obj["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def selects(selector, labels):
    """Whether a label selector (matchLabels only, as in these manifests) selects the labels."""
    if not selector:
        return False
    if selector.get("matchExpressions"):
        return False
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def data_keys(obj):
    return set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys()) | set(
        (obj.get("binaryData") or {}).keys()
    )


def check_consistency(objects, external_secrets, report):
    by_kind = {}
    seen = set()
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj:
            continue
        meta = obj.get("metadata") or {}
        identity = (obj["kind"], meta.get("namespace"), meta.get("name"))
        if identity in seen:
            report.error(obj, "defined twice")
        seen.add(identity)
        by_kind.setdefault(obj["kind"], {})[meta.get("name")] = obj

    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    accounts = by_kind.get("ServiceAccount", {})
    workloads = [o for kind in WORKLOAD_KINDS for o in by_kind.get(kind, {}).values()]

    def check_ref(obj, kind, name, key=None, optional=False):
        if kind == "ConfigMap":
            found = config_maps.get(name)
        else:
            found = secrets.get(name)
            if found is None and name in external_secrets:
                return
        if found is None:
            if not optional:
                report.error(obj, f"refers to {kind} {name}, which this overlay neither renders "
                                  "nor declares as created outside it")
            return
        if key is not None and key not in data_keys(found):
            report.error(obj, f"refers to key {key} of {kind} {name}, which has no such key")

    for obj in workloads:
        spec = pod_spec(obj)
        if spec.get("automountServiceAccountToken") is not False:
            report.error(obj, "pod must set automountServiceAccountToken: false")
        account = spec.get("serviceAccountName")
        if not account or account not in accounts:
            report.error(obj, f"serviceAccountName {account!r} is not a rendered ServiceAccount")
        pod_security = spec.get("securityContext") or {}
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                check_ref(obj, "ConfigMap", volume["configMap"]["name"],
                          optional=volume["configMap"].get("optional", False))
            if "secret" in volume:
                check_ref(obj, "Secret", volume["secret"]["secretName"],
                          optional=volume["secret"].get("optional", False))
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"container {container['name']}"
            security = container.get("securityContext") or {}
            if security.get("readOnlyRootFilesystem") is not True:
                report.error(obj, f"{where}: readOnlyRootFilesystem must be true")
            if security.get("allowPrivilegeEscalation") is not False:
                report.error(obj, f"{where}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                report.error(obj, f"{where}: capabilities must drop ALL")
            if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
                report.error(obj, f"{where}: runAsNonRoot must be true")
            seccomp = security.get("seccompProfile", pod_security.get("seccompProfile")) or {}
            if seccomp.get("type") != "RuntimeDefault":
                report.error(obj, f"{where}: seccompProfile must be RuntimeDefault")
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        report.error(obj, f"{where}: resources.{bound}.{resource} is missing")
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    check_ref(obj, "ConfigMap", source["configMapRef"]["name"],
                              optional=source["configMapRef"].get("optional", False))
                if "secretRef" in source:
                    check_ref(obj, "Secret", source["secretRef"]["name"],
                              optional=source["secretRef"].get("optional", False))
            for variable in container.get("env", []):
                value_from = variable.get("valueFrom") or {}
                if "configMapKeyRef" in value_from:
                    ref = value_from["configMapKeyRef"]
                    check_ref(obj, "ConfigMap", ref["name"], ref["key"], ref.get("optional", False))
                if "secretKeyRef" in value_from:
                    ref = value_from["secretKeyRef"]
                    check_ref(obj, "Secret", ref["name"], ref["key"], ref.get("optional", False))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if obj["kind"] in PROBED_KINDS and probe not in container:
                    report.error(obj, f"{where}: {probe} is missing")

    # The five Picket services.
    services = [o for o in by_kind.get("Deployment", {}).values()
                if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "service"]
    if len(services) != 5:
        report.error(None, f"expected the 5 Picket service Deployments, found {len(services)}")
    autoscalers = by_kind.get("HorizontalPodAutoscaler", {}).values()
    budgets = by_kind.get("PodDisruptionBudget", {}).values()
    for obj in services:
        name = obj["metadata"]["name"]
        container = pod_spec(obj)["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if ports.get("grpc") != GRPC_PORT or ports.get("admin") != ADMIN_PORT:
            report.error(obj, f"container ports must be grpc={GRPC_PORT} and admin={ADMIN_PORT}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (container.get(probe) or {}).get("grpc")
            if not grpc or grpc.get("port") != GRPC_PORT:
                report.error(obj, f"{probe} must be a gRPC probe on port {GRPC_PORT} (a number)")
        if "replicas" in obj["spec"]:
            report.error(obj, "sets spec.replicas, which its HorizontalPodAutoscaler owns")
        if not any(a["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": name} for a in autoscalers):
            report.error(obj, "has no HorizontalPodAutoscaler")
        if not any(selects(b["spec"].get("selector"), pod_labels(obj)) for b in budgets):
            report.error(obj, "has no PodDisruptionBudget")
        if not any(selects(s["spec"].get("selector"), pod_labels(obj))
                   for s in by_kind.get("Service", {}).values()):
            report.error(obj, "has no Service")

    for hpa in autoscalers:
        target = hpa["spec"]["scaleTargetRef"]
        if target.get("name") not in by_kind.get(target.get("kind"), {}):
            report.error(hpa, f"scales {target.get('kind')}/{target.get('name')}, which is not rendered")
    for budget in budgets:
        if not any(selects(budget["spec"].get("selector"), pod_labels(w)) for w in workloads):
            report.error(budget, "selects no rendered workload")

    # Services: a selector that matches pods, and target ports those pods have.
    for service in by_kind.get("Service", {}).values():
        selector = service["spec"].get("selector")
        if not selector:
            continue
        matched = [w for w in workloads if selects(selector, pod_labels(w))]
        if not matched:
            report.error(service, "selects no rendered workload")
            continue
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload in matched:
                container_ports = [p for c in pod_spec(workload)["containers"]
                                   for p in c.get("ports", [])]
                if not any(target in (p.get("name"), p["containerPort"]) for p in container_ports):
                    report.error(service, f"port {port.get('name')}: {describe(workload)} has no "
                                          f"container port {target}")

    # Ingress backends.
    for ingress in by_kind.get("Ingress", {}).values():
        for rule in ingress["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backend = path["backend"].get("service") or {}
                service = by_kind.get("Service", {}).get(backend.get("name"))
                if service is None:
                    report.error(ingress, f"backend Service {backend.get('name')} is not rendered")
                    continue
                port = backend.get("port", {})
                if not any(port.get("name") == p.get("name") or port.get("number") == p["port"]
                           for p in service["spec"]["ports"]):
                    report.error(ingress, f"Service {backend.get('name')} has no port {port}")

    # NATS substitutes the passwords into its configuration unquoted: one that looks like a number
    # (123456, 12k) stops the server, and whitespace cuts it short.
    for secret in secrets.values():
        if not secret["metadata"]["name"].startswith("picket-nats"):
            continue
        values = dict(secret.get("stringData") or {})
        for key, encoded in (secret.get("data") or {}).items():
            values[key] = base64.b64decode(encoded).decode("utf-8", "replace")
        for key, value in values.items():
            if not re.fullmatch(r"[A-Za-z][!-~]*", value):
                report.error(secret, f"{key} must start with a letter and hold no whitespace")

    # Default deny.
    if not any(p["spec"].get("podSelector") == {}
               and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in by_kind.get("NetworkPolicy", {}).values()):
        report.error(None, "no default-deny NetworkPolicy (podSelector {}, Ingress and Egress)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", help="the rendered overlay (multi-document YAML)")
    parser.add_argument("--overlay", required=True, help="its name, for the summary")
    parser.add_argument("--renderer", default="kustomize", help="what rendered it, for the summary")
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--external-secret", action="append", default=[],
                        help="a Secret the overlay expects to exist without rendering it")
    args = parser.parse_args()

    try:
        objects = load(args.rendered)
    except yaml.YAMLError as error:
        print(f"deploy-check: {args.overlay}: not YAML: {error}", file=sys.stderr)
        return 1
    if not objects:
        print(f"deploy-check: {args.overlay}: rendered nothing", file=sys.stderr)
        return 1
    report = Report()
    custom = check_schemas(objects, args.kubernetes_version, report)
    if not report.errors:
        # Consistency assumes well-formed objects.
        check_consistency(objects, set(args.external_secret), report)
    if report.errors:
        for error in report.errors:
            print(f"deploy-check: {args.overlay}: {error}", file=sys.stderr)
        print(f"deploy-check: {args.overlay}: FAILED, {len(report.errors)} problem(s) in "
              f"{len(objects)} objects", file=sys.stderr)
        return 1
    print(f"deploy-check: {args.overlay}: {len(objects)} objects valid ({args.renderer}; "
          f"{len(objects) - custom} against Kubernetes {args.kubernetes_version} strict schemas, "
          f"{custom} against deploy/check/schemas; cross-references consistent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
