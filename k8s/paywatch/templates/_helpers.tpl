{{/*
Names. The StatefulSet is named after the release (fullname) because
Bytewax derives the process id from the pod name minus "<statefulset>-".
*/}}
{{- define "paywatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "paywatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "paywatch.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "paywatch.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The headless Service that gives every pod a stable DNS name. */}}
{{- define "paywatch.headlessName" -}}
{{- printf "%s-cluster" (include "paywatch.fullname" .) }}
{{- end }}

{{- define "paywatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paywatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "paywatch.recoveryClaimName" -}}
{{- default (printf "%s-recovery" (include "paywatch.fullname" .)) .Values.recovery.persistence.existingClaim }}
{{- end }}

{{- define "paywatch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Pull policy: the value when set; else IfNotPresent for a digest (immutable)
and Always for a tag (tags move).
*/}}
{{- define "paywatch.pullPolicy" -}}
{{- if .Values.image.pullPolicy }}{{ .Values.image.pullPolicy }}
{{- else if .Values.image.digest }}IfNotPresent
{{- else }}Always
{{- end }}
{{- end }}

{{- define "paywatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paywatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "paywatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "paywatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: dataflow
{{- end }}

{{/*
The address list: one line per process, "<sts>-<i>.<headless>.<ns>.svc.<domain>:<port>",
in process-id order. Rendered from .Values.processes so it always follows the replica count.
*/}}
{{- define "paywatch.hostfile" -}}
{{- $fullname := include "paywatch.fullname" . }}
{{- $headless := include "paywatch.headlessName" . }}
{{- range $i := until (int .Values.processes) }}
{{ printf "%s-%d.%s.%s.svc.%s:%d" $fullname $i $headless $.Release.Namespace $.Values.clusterDomain (int $.Values.clusterPort) }}
{{- end }}
{{- end }}

{{/*
Bytewax's dataflow API server (bytewax_* metrics) is on when this is "true".
*/}}
{{- define "paywatch.bytewaxApi" -}}
{{- if .Values.metrics.bytewaxApi.enabled }}true{{ end }}
{{- end }}

{{/*
The ports of one pod must differ (the schema cannot compare two values).
*/}}
{{- define "paywatch.checkPorts" -}}
{{- $ports := list (int .Values.clusterPort) (int .Values.metrics.port) }}
{{- if include "paywatch.bytewaxApi" . }}
{{- $ports = append $ports (int .Values.metrics.bytewaxApi.port) }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "clusterPort, metrics.port and metrics.bytewaxApi.port must differ; got %v" $ports) }}
{{- end }}
{{- end }}

{{/*
Every object names its namespace, and it is never "default": a payments
workload gets a namespace of its own (policies such as checkov CKV_K8S_21
audit exactly this). Install with --namespace paywatch --create-namespace.
*/}}
{{- define "paywatch.checkNamespace" -}}
{{- if eq .Release.Namespace "default" }}
{{- fail "install Paywatch in a namespace of its own, not \"default\": helm install ... --namespace paywatch --create-namespace" }}
{{- end }}
{{- end }}
