{{/* Names and labels shared by every template. */}}

{{- define "tfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tfleet
{{- end -}}

{{- define "tfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the drain key (release namespace). */}}
{{- define "tfleet.drainKeySecret" -}}
{{- default (printf "%s-drain-key" (include "tfleet.fullname" .)) .Values.drainToken.secretName -}}
{{- end -}}

{{/* The operator's image; the same reference is handed to serving pods for the health bridge. */}}
{{- define "tfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions on the objects it manages, as RBAC rules. One list serves the
ClusterRole (all namespaces) and the per-namespace Roles. Every verb here is one the
operator sends (see docs/operations.md#rbac); `create` stands next to `patch` because a
server-side apply that creates an object is authorized as a create as well.
*/}}
{{- define "tfleet.operatorRules" -}}
- apiGroups: ["tfleet.dev"]
  resources: ["inferenceservices"]
  # get: a status write refused with 409 (planned from a stale view) reads the object again;
  # patch: a promote or abort request is removed once the status records it done
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tfleet.dev"]
  resources: ["inferenceservices/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  # get, patch: a transition reported again counts on its existing Event
  verbs: ["create", "get", "patch"]
{{- end -}}

{{/*
The operator's permissions on the cluster's InferenceServiceDefaults (cluster-scoped, one
object named cluster): it watches them and records in their status whether it accepted them.
*/}}
{{- define "tfleet.defaultsRules" -}}
- apiGroups: ["tfleet.dev"]
  resources: ["inferenceservicedefaults"]
  verbs: ["list", "watch"]
- apiGroups: ["tfleet.dev"]
  resources: ["inferenceservicedefaults/status"]
  resourceNames: ["cluster"]
  verbs: ["patch"]
{{- end -}}
