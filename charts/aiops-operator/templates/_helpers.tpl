{{/* Labels on every object; the selector uses the name label only, as
manifests/ does, so the Deployment's selector never changes on upgrade. */}}
{{- define "aiops-operator.labels" -}}
app.kubernetes.io/name: aiops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "aiops-operator.selectorLabels" -}}
app.kubernetes.io/name: aiops-operator
{{- end }}

{{/* Namespaces the webhooks skip: the configured ones plus our own. */}}
{{- define "aiops-operator.excludedNamespaces" -}}
{{- $names := .Values.webhook.excludeNamespaces | default list -}}
{{- if not (has .Release.Namespace $names) -}}
{{- $names = append $names .Release.Namespace -}}
{{- end -}}
{{- toJson $names -}}
{{- end }}

{{/* The validating webhook's failurePolicy: the override, or Fail when any
policy can enforce and Ignore when everything only audits or warns. */}}
{{- define "aiops-operator.failurePolicy" -}}
{{- $policy := .Values.webhook.failurePolicy -}}
{{- if $policy -}}
{{- if not (has $policy (list "Fail" "Ignore")) -}}
{{- fail (printf "webhook.failurePolicy must be Fail or Ignore, not %q" $policy) -}}
{{- end -}}
{{- $policy -}}
{{- else -}}
{{- $mode := .Values.admission.mode -}}
{{- if not (has $mode (list "Enforce" "Audit" "Warn" "Policy")) -}}
{{- fail (printf "admission.mode must be Enforce, Audit, Warn or Policy, not %q" $mode) -}}
{{- end -}}
{{- $enforces := or (eq $mode "Enforce") (eq $mode "Policy") -}}
{{- range $name, $override := .Values.admission.policyModes -}}
{{- if eq $override "Enforce" -}}{{- $enforces = true -}}{{- end -}}
{{- end -}}
{{- ternary "Fail" "Ignore" $enforces -}}
{{- end -}}
{{- end }}

{{/* cert-manager's CA injection, when it manages the serving Secret. */}}
{{- define "aiops-operator.webhookAnnotations" -}}
{{- if and .Values.certificates.certManager.enabled (not .Values.certificates.selfManaged) }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace .Values.certificates.certManager.certificate }}
{{- end }}
{{- end }}

{{/* A map or list as the YAML text of one ConfigMap value (as a literal
block would hold it, with its final newline); empty stays empty. */}}
{{- define "aiops-operator.yamlBlock" -}}
{{- if . -}}{{ printf "%s\n" (toYaml .) | quote }}{{- else -}}""{{- end -}}
{{- end }}
