#!/usr/bin/env python3
"""Generates the sandbox's "node physics" from the image catalog.

There is no kubelet and no container runtime in the sandbox: kwok plays the
kubelet by applying Stages to pods. This script turns `images.yaml` into:

  OUT/stages.yaml   kwok Stages for Nodes and Pods (they replace kwok's
                    built-in stages, so the set is complete: classify, start,
                    image-pull failure, crash loop, completion, deletion)
  OUT/logs/*.log    container log files in CRI format, served by kwok so that
                    `kubectl logs [--previous]` works for crashing containers

How a pod moves, per container (init containers first, in order):
  1. classify  - the Go template embeds the catalog and writes a verdict per
                 container into the annotation ANNOTATION:
                 ";app=ok;db=crash;" (ok | pull | oom | crash). This is the
                 only place the catalog rules are evaluated.
  2. start     - podIP, phase and first container states from the verdicts;
                 a pulled image reports its catalog digest as `imageID`.
  3. pull      - ErrImagePull -> ImagePullBackOff, with a kubelet-like
                 Warning Event naming the image.
  4. crash     - a running container whose verdict is oom/crash terminates
                 (137 OOMKilled or 1 Error), goes to CrashLoopBackOff with
                 restartCount+1 and lastState.terminated; its logs are
                 published as a kwok `Logs` object owned by the pod.
  5. restart   - after a back-off that doubles per restart (capped), the
                 container runs again, and step 4 repeats.
  6. complete  - a healthy pod with restartPolicy Never/OnFailure succeeds.
  7. delete    - a pod with a deletionTimestamp is removed, so rollouts finish.
  8. new image - a container image changed in place (only images of a
                 running Pod may change) is judged again (classify), then
                 its containers start over from step 2 with the new image,
                 as a kubelet restarts a container whose image changed.

Every later stage reads only the annotation and the pod's status, so the
stage selectors are mutually exclusive per container and need no catalog.
"""

import argparse
import json
import os
import re
import sys
from datetime import datetime, timezone

import yaml

ANNOTATION = "sandbox.aiops-operator.dev/physics"
# The images the verdicts were made for: a pod whose spec names other images
# (an in-place image update) is judged again.
IMAGES_ANNOTATION = "sandbox.aiops-operator.dev/physics-images"

# Binary and decimal quantity suffixes, as Kubernetes parses memory sizes.
UNITS = {
    "": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}

QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class CatalogError(Exception):
    """The image catalog is malformed; the message says where."""


def parse_memory(text, where):
    match = QUANTITY.match(str(text))
    if not match or match.group(2) not in UNITS:
        raise CatalogError(f"{where}: memory {text!r} is not a quantity like 64Mi")
    return int(float(match.group(1)) * UNITS[match.group(2)])


def split_tag(image):
    """(repository, tag) of an image name; a registry port is not a tag."""
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return image, ""
    tag = last.split(":", 1)[1]
    return image[: len(image) - len(tag) - 1], tag


def image_aliases(image, digest=""):
    """The names a pod may use for a catalog image: Docker Hub shorthands,
    the bare repository for a `latest` entry (no tag means latest), and the
    repository pinned to the entry's digest (`nginx@sha256:...`)."""
    names = [image]
    if "/" not in image.split(":")[0]:
        names += [f"docker.io/library/{image}", f"library/{image}"]
    if not image.startswith("docker.io/"):
        names.append(f"docker.io/{image}")
    repositories = [split_tag(name)[0] for name in names]
    if split_tag(image)[1] == "latest":
        names += repositories
    if digest:
        names += [f"{repository}@{digest}" for repository in repositories]
    return names


def image_id(image, digest):
    """What a kubelet reports as `imageID`: the canonical repository and the
    digest it pulled (`docker.io/library/nginx@sha256:...`)."""
    repository = split_tag(image)[0]
    first = repository.split("/", 1)[0]
    if not ("." in first or ":" in first or first == "localhost"):
        if "/" not in repository:
            repository = f"library/{repository}"
        repository = f"docker.io/{repository}"
    return f"{repository}@{digest}"


def load_catalog(path):
    with open(path, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    entries = (doc or {}).get("images")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: expected a non-empty `images:` list")
    catalog = []
    for index, entry in enumerate(entries):
        where = f"{path}: images[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise CatalogError(f"{where}: each entry needs an `image:` string")
        image = entry["image"]
        if not split_tag(image)[1]:
            raise CatalogError(f"{where}: {image!r} must carry an explicit tag")
        digest = entry.get("digest")
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise CatalogError(f"{where}: `digest` must be sha256: and 64 hex digits, got {digest!r}")
        required_env = entry.get("requiredEnv", [])
        if required_env and not entry.get("crashLog"):
            raise CatalogError(f"{where}: `requiredEnv` needs the `crashLog` line it prints")
        catalog.append({
            "image": image,
            "digest": digest,
            "memory": parse_memory(entry.get("memory", "0"), where),
            "env": list(required_env),
            "crash_log": entry.get("crashLog", ""),
            "logs": list(entry.get("logs", [])),
        })
    return catalog


def log_slug(image):
    return re.sub(r"[^A-Za-z0-9._-]", "_", image)


def write_logs(catalog, logs_dir):
    """One normal and one crash log per image name a pod may use, in CRI format."""
    os.makedirs(logs_dir, exist_ok=True)
    stamp = datetime(2026, 1, 1, tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
    for entry in catalog:
        normal = [f"{stamp} stdout F {line}" for line in entry["logs"]]
        # A container that crashes on start never gets as far as its normal lines.
        crash = [f"{stamp} stderr F {entry['crash_log']}"] if entry["crash_log"] else normal
        for name in image_aliases(entry["image"], entry["digest"]):
            for suffix, lines in ((".log", normal), (".crash.log", crash)):
                with open(os.path.join(logs_dir, log_slug(name) + suffix), "w", encoding="utf-8") as out:
                    out.write("".join(line + "\n" for line in lines))


# ---------------------------------------------------------------- templates
# kwok renders these Go templates (with sprig functions) against the object.

def catalog_dict(catalog):
    """The catalog as a Go-template `dict` expression keyed by every alias."""
    items = []
    for entry in catalog:
        env = " ".join(json.dumps(name) for name in entry["env"])
        reported = json.dumps(image_id(entry["image"], entry["digest"]))
        value = f'(dict "memory" {entry["memory"]} "env" (list {env}) "id" {reported})'
        aliases = image_aliases(entry["image"], entry["digest"])
        items += [f"{json.dumps(alias)} {value}" for alias in aliases]
    return "(dict " + " ".join(items) + ")"


def units_dict():
    return "(dict " + " ".join(f'"{unit}" {factor}' for unit, factor in UNITS.items()) + ")"


CLASSIFY = r"""
{{ $catalog := CATALOG }}
{{ $units := UNITS }}
{{ $verdicts := ";" }}
{{ $images := ";" }}
{{ range $c := concat (.spec.initContainers | default list) .spec.containers }}
  {{ $images = printf "%s%s=%s;" $images $c.name $c.image }}
  {{ $v := "ok" }}
  {{ $entry := get $catalog $c.image }}
  {{ if not $entry }}
    {{ $v = "pull" }}
  {{ else }}
    {{ $limit := "" }}
    {{ with $c.resources }}{{ with .limits }}{{ with .memory }}{{ $limit = toString . }}{{ end }}{{ end }}{{ end }}
    {{ if $limit }}
      {{ $number := regexFind `^[0-9]+(\.[0-9]+)?` $limit | default "0" | float64 }}
      {{ $unit := regexReplaceAll `^[0-9]+(\.[0-9]+)?` $limit "" }}
      {{ $bytes := mulf $number (get $units $unit | default 1) }}
      {{ if lt $bytes (float64 $entry.memory) }}{{ $v = "oom" }}{{ end }}
    {{ end }}
    {{ if eq $v "ok" }}
      {{ $names := list }}
      {{ range $c.env }}{{ $names = append $names .name }}{{ end }}
      {{ range $entry.env }}
        {{ if and (not (has . $names)) (not $c.envFrom) }}{{ $v = "crash" }}{{ end }}
      {{ end }}
    {{ end }}
  {{ end }}
  {{ $verdicts = printf "%s%s=%s;" $verdicts $c.name $v }}
{{ end }}
annotations:
  ANNOTATION: {{ $verdicts | Quote }}
  IMAGES_ANNOTATION: {{ $images | Quote }}
"""

# Looks up one container's verdict in the annotation: sets $v from $c.name.
VERDICT_OF = (
    '{{ $v := regexFind (printf ";%s=[a-z]+;" $c.name) $p '
    '| trimPrefix (printf ";%s=" $c.name) | trimSuffix ";" }}'
)

PREAMBLE = (
    "{{ $now := Now }}\n"
    "{{ $p := index .metadata.annotations \"ANNOTATION\" }}\n"
    "{{ $pod := . }}\n"
)

START = PREAMBLE + r"""
{{ $catalog := CATALOG }}
{{ $blocked := false }}
{{ $failing := false }}
{{ $running := false }}
{{ $init := list }}
{{ range $c := (.spec.initContainers | default list) }}
  VERDICT_OF
  {{ $s := dict "name" $c.name "image" $c.image "imageID" "" "restartCount" 0 "ready" false "started" false }}
  {{ if and (not $blocked) (ne $v "pull") }}{{ $_ := set $s "imageID" (get $catalog $c.image).id }}{{ end }}
  {{ if $blocked }}
    {{ $_ := set $s "state" (dict "waiting" (dict "reason" "PodInitializing")) }}
  {{ else if eq $v "ok" }}
    {{ $_ := set $s "state" (dict "terminated" (dict "exitCode" 0 "reason" "Completed" "startedAt" $now "finishedAt" $now)) }}
  {{ else if eq $v "pull" }}
    {{ $blocked = true }}
    {{ $_ := set $s "state" (dict "waiting" (dict "reason" "ErrImagePull" "message" (printf "failed to pull and unpack image %q: not found" $c.image))) }}
  {{ else }}
    {{ $blocked = true }}
    {{ $_ := set $s "started" true }}
    {{ $_ := set $s "state" (dict "running" (dict "startedAt" $now)) }}
  {{ end }}
  {{ $init = append $init $s }}
{{ end }}
{{ $main := list }}
{{ range $c := .spec.containers }}
  VERDICT_OF
  {{ $s := dict "name" $c.name "image" $c.image "imageID" "" "restartCount" 0 "ready" false "started" false }}
  {{ if and (not $blocked) (ne $v "pull") }}{{ $_ := set $s "imageID" (get $catalog $c.image).id }}{{ end }}
  {{ if $blocked }}
    {{ $_ := set $s "state" (dict "waiting" (dict "reason" "PodInitializing")) }}
  {{ else if eq $v "pull" }}
    {{ $failing = true }}
    {{ $_ := set $s "state" (dict "waiting" (dict "reason" "ErrImagePull" "message" (printf "failed to pull and unpack image %q: not found" $c.image))) }}
  {{ else }}
    {{ $running = true }}
    {{ if ne $v "ok" }}{{ $failing = true }}{{ end }}
    {{ $_ := set $s "ready" (eq $v "ok") }}
    {{ $_ := set $s "started" true }}
    {{ $_ := set $s "state" (dict "running" (dict "startedAt" $now)) }}
  {{ end }}
  {{ $main = append $main $s }}
{{ end }}
{{ $ready := and (not $blocked) (not $failing) }}
conditions:
- type: PodReadyToStartContainers
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Initialized
  status: {{ if $blocked }}"False"{{ else }}"True"{{ end }}
  {{ if $blocked }}reason: ContainersNotInitialized{{ end }}
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: {{ if $ready }}"True"{{ else }}"False"{{ end }}
  {{ if not $ready }}reason: ContainersNotReady{{ end }}
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: {{ if $ready }}"True"{{ else }}"False"{{ end }}
  {{ if not $ready }}reason: ContainersNotReady{{ end }}
  lastTransitionTime: {{ $now | Quote }}
{{ if $init }}initContainerStatuses: {{ toJson $init }}{{ end }}
containerStatuses: {{ toJson $main }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
hostIPs:
- ip: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: {{ if and (not $blocked) $running }}Running{{ else }}Pending{{ end }}
startTime: {{ $now | Quote }}
"""

# Rewrites the status lists, changing only the entries MATCH selects.
def rewrite_statuses(match, change):
    return "\n".join(
        f"{{{{ $out := list }}}}\n"
        f"{{{{ range $s := (.status.{field} | default list) }}}}\n"
        f"  {{{{ $s = deepCopy $s }}}}\n"
        f"  {{{{ $c := $s }}}}\n"
        f"  VERDICT_OF\n"
        f"  {{{{ if {match} }}}}\n{change}\n  {{{{ end }}}}\n"
        f"  {{{{ $out = append $out $s }}}}\n"
        f"{{{{ end }}}}\n"
        f"{{{{ if $out }}}}{field}: {{{{ toJson $out }}}}{{{{ end }}}}"
        for field in ("initContainerStatuses", "containerStatuses")
    )


PULL_BACKOFF = PREAMBLE + rewrite_statuses(
    'and $s.state.waiting (eq $s.state.waiting.reason "ErrImagePull")',
    '    {{ $_ := set $s "state" (dict "waiting" (dict "reason" "ImagePullBackOff" '
    '"message" (printf "Back-off pulling image %q" $s.image))) }}',
)

PULL_EVENT = r"""
{{ $now := Now }}
{{ $failed := "" }}
{{ $field := "" }}
{{ range $s := (.status.initContainerStatuses | default list) }}
  {{ if and (not $failed) $s.state.waiting (eq $s.state.waiting.reason "ErrImagePull") }}
    {{ $failed = $s.image }}{{ $field = printf "spec.initContainers{%s}" $s.name }}
  {{ end }}
{{ end }}
{{ range $s := (.status.containerStatuses | default list) }}
  {{ if and (not $failed) $s.state.waiting (eq $s.state.waiting.reason "ErrImagePull") }}
    {{ $failed = $s.image }}{{ $field = printf "spec.containers{%s}" $s.name }}
  {{ end }}
{{ end }}
apiVersion: v1
kind: Event
metadata:
  name: {{ printf "%s.image-pull-failed" .metadata.name | Quote }}
  namespace: {{ .metadata.namespace | Quote }}
involvedObject:
  apiVersion: v1
  kind: Pod
  name: {{ .metadata.name | Quote }}
  namespace: {{ .metadata.namespace | Quote }}
  uid: {{ .metadata.uid | Quote }}
  fieldPath: {{ $field | Quote }}
type: Warning
reason: Failed
message: {{ printf "Failed to pull image %q: rpc error: code = NotFound desc = failed to pull and unpack image %q: %s: not found" $failed $failed $failed | Quote }}
source:
  component: kubelet
  host: {{ .spec.nodeName | Quote }}
reportingComponent: kubelet
reportingInstance: {{ .spec.nodeName | Quote }}
firstTimestamp: {{ $now | Quote }}
lastTimestamp: {{ $now | Quote }}
count: 1
"""

DOOMED = 'and $s.state.running (or (eq $v "oom") (eq $v "crash"))'

CRASH = PREAMBLE + "{{ $never := eq .spec.restartPolicy \"Never\" }}\n{{ $dead := false }}\n" + rewrite_statuses(
    DOOMED,
    r"""
    {{ $code := 1 }}{{ $reason := "Error" }}
    {{ if eq $v "oom" }}{{ $code = 137 }}{{ $reason = "OOMKilled" }}{{ end }}
    {{ $term := dict "exitCode" $code "reason" $reason "startedAt" $s.state.running.startedAt "finishedAt" $now }}
    {{ $_ := set $s "ready" false }}
    {{ $_ := set $s "started" false }}
    {{ if $never }}
      {{ $dead = true }}
      {{ $_ := set $s "state" (dict "terminated" $term) }}
    {{ else }}
      {{ $_ := set $s "lastState" (dict "terminated" $term) }}
      {{ $_ := set $s "restartCount" (add1 $s.restartCount) }}
      {{ $_ := set $s "state" (dict "waiting" (dict "reason" "CrashLoopBackOff" "message" (printf "back-off restarting failed container=%s pod=%s_%s(%s)" $s.name $pod.metadata.name $pod.metadata.namespace $pod.metadata.uid))) }}
    {{ end }}
""",
) + r"""
conditions:
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
{{ if $dead }}phase: Failed{{ end }}
"""

LOGS = r"""
{{ $p := index .metadata.annotations "ANNOTATION" }}
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Logs
metadata:
  name: {{ .metadata.name | Quote }}
  namespace: {{ .metadata.namespace | Quote }}
  ownerReferences:
  - apiVersion: v1
    kind: Pod
    name: {{ .metadata.name | Quote }}
    uid: {{ .metadata.uid | Quote }}
spec:
  logs:
  {{ range $c := concat (.spec.initContainers | default list) .spec.containers }}
  VERDICT_OF
  {{ $file := printf "LOGS_DIR/%s.log" (regexReplaceAll `[^A-Za-z0-9._-]` $c.image "_") }}
  {{ if eq $v "crash" }}{{ $file = printf "LOGS_DIR/%s.crash.log" (regexReplaceAll `[^A-Za-z0-9._-]` $c.image "_") }}{{ end }}
  - containers: [{{ $c.name | Quote }}]
    logsFile: {{ $file | Quote }}
    previousLogsFile: {{ $file | Quote }}
  {{ end }}
"""

RESTART = PREAMBLE + rewrite_statuses(
    'and $s.state.waiting (eq $s.state.waiting.reason "CrashLoopBackOff")',
    '    {{ $_ := set $s "started" true }}\n'
    '    {{ $_ := set $s "state" (dict "running" (dict "startedAt" $now)) }}',
)

COMPLETE = r"""
{{ $now := Now }}
{{ $out := list }}
{{ range $s := .status.containerStatuses }}
  {{ $s = deepCopy $s }}
  {{ $_ := set $s "ready" false }}
  {{ $_ := set $s "started" false }}
  {{ $_ := set $s "state" (dict "terminated" (dict "exitCode" 0 "reason" "Completed" "startedAt" $s.state.running.startedAt "finishedAt" $now)) }}
  {{ $out = append $out $s }}
{{ end }}
containerStatuses: {{ toJson $out }}
conditions:
- type: ContainersReady
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
phase: Succeeded
"""

NODE_INITIALIZE = r"""
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  reason: {{ .reason | Quote }}
  message: {{ .message | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
addresses:
- type: InternalIP
  address: {{ NodeIP | Quote }}
- type: Hostname
  address: {{ .metadata.name | Quote }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ NodePort }}
allocatable: {{ toJson (.status.allocatable | default (dict "cpu" "64" "memory" "256Gi" "pods" "1000")) }}
capacity: {{ toJson (.status.capacity | default (dict "cpu" "64" "memory" "256Gi" "pods" "1000")) }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: KUBE_VERSION
  kubeProxyVersion: KUBE_VERSION
  containerRuntimeVersion: "sandbox://kwok"
  kernelVersion: ""
  osImage: "aiops-operator sandbox node"
  machineID: ""
  bootID: ""
  systemUUID: ""
phase: Running
"""

NODE_HEARTBEAT = r"""
{{ $now := Now }}
conditions:
{{ range .status.conditions }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  reason: {{ .reason | Quote }}
  message: {{ .message | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ .lastTransitionTime | Quote }}
{{ end }}
"""

# jq selector fragments (kwok evaluates selector keys with gojq).
ANY_STATUS = "[(.status.initContainerStatuses // [])[], (.status.containerStatuses // [])[]]"
ANNOTATION_JQ = f'(.metadata.annotations["{ANNOTATION}"] // "")'
NOT_DELETING = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
# The ";name=image;" strings of the spec, of the last verdicts, and of the
# container statuses (in the order classify writes them).
SPEC_IMAGES_JQ = (
    '(";" + ([(.spec.initContainers // [])[], .spec.containers[] | "\\(.name)=\\(.image);"] | join("")))'
)
IMAGES_JQ = f'(.metadata.annotations["{IMAGES_ANNOTATION}"] // "")'
STATUS_IMAGES_JQ = (
    '(";" + ([(.status.initContainerStatuses // [])[], (.status.containerStatuses // [])[]'
    ' | "\\(.name)=\\(.image);"] | join("")))'
)


def jq_true(expression):
    return {"key": expression, "operator": "In", "values": ["true"]}


def pod_stage(name, selector, steps, delay_ms=None, jitter_ms=None, delay_jq=None):
    spec = {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {"matchExpressions": selector},
        "weight": 1,
        "steps": steps,
    }
    if delay_ms is not None or delay_jq is not None:
        delay = {}
        if delay_ms is not None:
            delay["durationMilliseconds"] = delay_ms
        if jitter_ms is not None:
            delay["jitterDurationMilliseconds"] = jitter_ms
        if delay_jq is not None:
            delay["durationFrom"] = {"expressionFrom": delay_jq}
        spec["delay"] = delay
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


def status_patch(template):
    return {"patch": {"subresource": "status", "root": "status", "template": template}}


def build_stages(catalog, logs_dir, kube_version):
    def fill(template):
        return (template.replace("VERDICT_OF", VERDICT_OF)
                .replace("IMAGES_ANNOTATION", IMAGES_ANNOTATION)
                .replace("ANNOTATION", ANNOTATION)
                .replace("CATALOG", catalog_dict(catalog))
                .replace("UNITS", units_dict())
                .replace("LOGS_DIR", logs_dir)
                .replace("KUBE_VERSION", kube_version)
                .strip() + "\n")

    doomed_running = (
        f"{ANNOTATION_JQ} as $p | [{ANY_STATUS}[] | select(.state.running != null) | .name as $n"
        ' | select(($p | contains(";\\($n)=oom;")) or ($p | contains(";\\($n)=crash;")))] | length > 0'
    )
    waiting_for = lambda reason: f'[{ANY_STATUS}[] | select(.state.waiting.reason == "{reason}")] | length > 0'
    # kubelet's crash back-off is 10s doubling to 5m; the sandbox runs it at
    # a tenth of that (1s doubling, capped at 10s) so tests stay quick.
    backoff_jq = (
        f'[{ANY_STATUS}[] | select(.state.waiting.reason == "CrashLoopBackOff") | .restartCount]'
        ' | (max // 1) as $r | [pow(2; $r - 1), 10] | min | "\\(.)s"'
    )
    stages = [
        pod_stage("pod-classify", [
            NOT_DELETING,
            {"key": ".spec.nodeName", "operator": "Exists"},
            {"key": f'.metadata.annotations["{ANNOTATION}"]', "operator": "DoesNotExist"},
        ], [{"patch": {"root": "metadata", "template": fill(CLASSIFY)}}]),
        pod_stage("pod-start", [
            NOT_DELETING,
            {"key": f'.metadata.annotations["{ANNOTATION}"]', "operator": "Exists"},
            {"key": ".status.podIP", "operator": "DoesNotExist"},
        ], [status_patch(fill(START))], delay_ms=200, jitter_ms=800),
        pod_stage("pod-image-pull-backoff", [
            NOT_DELETING, jq_true(waiting_for("ErrImagePull")),
        ], [
            {"apply": {"template": fill(PULL_EVENT)}},
            {"event": {"type": "Warning", "reason": "Failed", "message": "Error: ErrImagePull"}},
            status_patch(fill(PULL_BACKOFF)),
            {"event": {"type": "Normal", "reason": "BackOff", "message": "Back-off pulling image"}},
        ], delay_ms=500, jitter_ms=1000),
        pod_stage("pod-container-crash", [
            NOT_DELETING, jq_true(doomed_running),
        ], [
            {"apply": {"template": fill(LOGS)}},
            status_patch(fill(CRASH)),
            {"event": {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container"}},
        ], delay_ms=1000, jitter_ms=1500),
        pod_stage("pod-container-restart", [
            NOT_DELETING, jq_true(waiting_for("CrashLoopBackOff")),
        ], [status_patch(fill(RESTART))], delay_ms=1000, delay_jq=backoff_jq),
        pod_stage("pod-complete", [
            NOT_DELETING,
            {"key": ".status.phase", "operator": "In", "values": ["Running"]},
            {"key": ".spec.restartPolicy", "operator": "In", "values": ["Never", "OnFailure"]},
            jq_true(f'{ANNOTATION_JQ} | test("=(pull|oom|crash);") | not'),
            jq_true(f'[(.status.containerStatuses // [])[] | select(.state.running == null)] | length == 0'),
        ], [status_patch(fill(COMPLETE))], delay_ms=1000, jitter_ms=2000),
        pod_stage("pod-image-changed", [
            NOT_DELETING,
            {"key": f'.metadata.annotations["{ANNOTATION}"]', "operator": "Exists"},
            jq_true(f"{SPEC_IMAGES_JQ} != {IMAGES_JQ}"),
        ], [{"patch": {"root": "metadata", "template": fill(CLASSIFY)}}]),
        pod_stage("pod-image-restart", [
            NOT_DELETING,
            {"key": ".status.podIP", "operator": "Exists"},
            jq_true(f"{SPEC_IMAGES_JQ} == {IMAGES_JQ}"),
            jq_true(f"{STATUS_IMAGES_JQ} != {IMAGES_JQ}"),
        ], [status_patch(fill(START))], delay_ms=500, jitter_ms=500),
        pod_stage("pod-delete", [
            {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
            {"key": ".metadata.finalizers", "operator": "DoesNotExist"},
        ], [{"delete": True}], delay_ms=200, jitter_ms=500),
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage",
            "metadata": {"name": "node-initialize"},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Node"},
                "selector": {"matchExpressions": [{
                    "key": '.status.conditions.[] | select(.type == "Ready") | .status',
                    "operator": "NotIn", "values": ["True"]}]},
                "steps": [status_patch(fill(NODE_INITIALIZE))],
            },
        },
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage",
            "metadata": {"name": "node-heartbeat"},
            "spec": {
                "resourceRef": {"apiGroup": "v1", "kind": "Node"},
                "selector": {"matchExpressions": [{
                    "key": '.status.conditions.[] | select(.type == "Ready") | .status',
                    "operator": "In", "values": ["True"]}]},
                "delay": {"durationMilliseconds": 20000, "jitterDurationMilliseconds": 25000},
                "steps": [status_patch(fill(NODE_HEARTBEAT))],
            },
        },
    ]
    return stages


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--out", required=True, help="directory for stages.yaml and logs/")
    parser.add_argument("--kube-version", required=True)
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(args.catalog)
    except (CatalogError, OSError, yaml.YAMLError) as err:
        print(f"physics.py: {err}", file=sys.stderr)
        return 1
    out = os.path.abspath(args.out)
    logs_dir = os.path.join(out, "logs")
    write_logs(catalog, logs_dir)
    stages = build_stages(catalog, logs_dir, args.kube_version)
    with open(os.path.join(out, "stages.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump_all(stages, handle, sort_keys=False, width=4096)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
