#!/usr/bin/env python3
"""Writes realistic admission.k8s.io/v1 AdmissionReviews for `make bench-webhook`.

What the API server really sends for a production Pod or Deployment CREATE:
several containers with resources, probes, env, volume mounts and security
contexts, an init container, labels, annotations, managedFields, volumes of
every common kind, and the requesting user's groups. Every object complies
with all 12 policies in policies/, so in Enforce mode the webhook evaluates
every rule and then allows (the common case in a healthy cluster).

Usage: make_reviews.py OUT_DIR
  -> OUT_DIR/pod-review.json, OUT_DIR/deployment-review.json, and
     OUT_DIR/reviews.jsonl (both, one per line, for `oha -Z`: the load
     alternates between them)
"""
import json
import sys
import uuid
from pathlib import Path


def container(name, image, port, cpu, memory, extra_env=0):
    env = [
        {"name": "APP_ENV", "value": "production"},
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc:4317"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "password"}}},
        {"name": "FEATURE_FLAGS", "valueFrom": {"configMapKeyRef": {"name": "checkout-flags", "key": "flags"}}},
        {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"containerName": name, "resource": "limits.cpu", "divisor": "1"}}},
    ]
    env += [{"name": f"EXTRA_SETTING_{i}", "value": f"value-{i}"} for i in range(extra_env)]
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": port + 1000, "protocol": "TCP"},
        ],
        "env": env,
        "envFrom": [{"configMapRef": {"name": "checkout-config"}}],
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
            "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 2,
            "successThreshold": 1, "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 5, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3,
        },
        "startupProbe": {
            "tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 30,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/checkout", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": True},
            {"name": "cache", "mountPath": "/var/cache/checkout"},
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def pod_spec():
    return {
        "serviceAccountName": "checkout",
        "automountServiceAccountToken": True,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "priority": 0,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
        },
        "initContainers": [{
            "name": "migrate",
            "image": "registry.example.com/shop/checkout-migrate:2.14.3",
            "command": ["/bin/migrate", "--wait-for-db", "--timeout=120s"],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False, "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
        "containers": [
            container("checkout", "registry.example.com/shop/checkout:2.14.3", 8080, "500m", "512Mi", extra_env=6),
            container("envoy", "docker.io/envoyproxy/envoy:v1.31.2", 9901, "200m", "128Mi"),
            container("log-shipper", "docker.io/fluent/fluent-bit:3.1.9", 2020, "50m", "64Mi"),
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
            {"name": "tls", "secret": {"secretName": "checkout-tls", "defaultMode": 256}},
            {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}},
        ],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}}},
        }]}},
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}},
        }],
    }


LABELS = {
    "app.kubernetes.io/name": "checkout",
    "app.kubernetes.io/instance": "checkout-prod",
    "app.kubernetes.io/version": "2.14.3",
    "app.kubernetes.io/component": "api",
    "app.kubernetes.io/part-of": "shop",
    "app.kubernetes.io/managed-by": "argocd",
    "team": "payments",
    "cost-center": "cc-4711",
}
ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "9080",
    "prometheus.io/path": "/metrics",
    "kubectl.kubernetes.io/default-container": "checkout",
    "argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/checkout",
    "checksum/config": "9f2c1e7b3a4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f",
    "checksum/secret": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
}


def managed_fields(manager):
    return [{
        "manager": manager, "operation": "Update", "apiVersion": "apps/v1",
        "time": "2026-11-21T10:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {f"f:{k}": {} for k in LABELS},
                                    "f:annotations": {f"f:{k}": {} for k in ANNOTATIONS}},
                     "f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}},
    }]


def review(kind, group, version, resource, name, namespace, obj):
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:argocd:argocd-application-controller",
                "uid": "5b0c3f5e-8d5e-4c8e-9a57-6f2f4b1f0c11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "argocd-controller"},
        },
    }


def pod_review():
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "checkout-7d9f8b6c5d-x2k4p",
            "generateName": "checkout-7d9f8b6c5d-",
            "namespace": "shop",
            "uid": "0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "labels": {**LABELS, "pod-template-hash": "7d9f8b6c5d"},
            "annotations": ANNOTATIONS,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8b6c5d",
                "uid": "3c2b1a0f-8e7d-4c6b-9a59-4f3e2d1c0b9a", "controller": True, "blockOwnerDeletion": True,
            }],
            "managedFields": managed_fields("kube-controller-manager"),
        },
        "spec": pod_spec(),
    }
    return review("Pod", "", "v1", "pods", pod["metadata"]["name"], "shop", pod)


def deployment_review():
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "labels": LABELS,
            "annotations": {**ANNOTATIONS, "deployment.kubernetes.io/revision": "42"},
            "managedFields": managed_fields("argocd-controller"),
        },
        "spec": {
            "replicas": 6,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/instance": "checkout-prod"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": LABELS, "annotations": ANNOTATIONS},
                "spec": pod_spec(),
            },
        },
    }
    return review("Deployment", "apps", "v1", "deployments", "checkout", "shop", deployment)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, body in [("pod-review.json", pod_review()), ("deployment-review.json", deployment_review())]:
        text = json.dumps(body, separators=(",", ":"))
        (out / name).write_text(text)
        lines.append(text)
        print(f"{out / name}: {len(text)} bytes")
    (out / "reviews.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
