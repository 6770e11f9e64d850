{{/* The release's base name: the release name, or "<release>-coffer" when it does not contain "coffer". */}}
{{- define "coffer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 36 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 36 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 36 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The controller's name: its Deployment, ServiceAccount, RBAC and Lease. */}}
{{- define "coffer.controller" -}}
{{- printf "%s-controller" (include "coffer.fullname" .) -}}
{{- end -}}

{{- define "coffer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* The labels of every object, without its component. */}}
{{- define "coffer.commonLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: coffer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The controller's objects' labels. */}}
{{- define "coffer.labels" -}}
{{ include "coffer.commonLabels" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* One image for the controller and its workers: repository:tag, or repository@digest. */}}
{{- define "coffer.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Leader election is needed as soon as two replicas run. */}}
{{- define "coffer.leaderElection" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "leaderElection.enabled must be true when replicaCount is more than 1: two controllers without a Lease would both start every backup" -}}
{{- end -}}
{{- if .Values.leaderElection.enabled }}true{{ end -}}
{{- end -}}

{{/* The namespaces the chart makes the worker ServiceAccount in. */}}
{{- define "coffer.workerNamespaces" -}}
{{- $namespaces := .Values.worker.serviceAccount.namespaces -}}
{{- if .Values.watchNamespace -}}
{{- $namespaces = append $namespaces .Values.watchNamespace -}}
{{- end -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}
