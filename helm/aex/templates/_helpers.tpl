{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "aex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "aex.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aex.labels" -}}
helm.sh/chart: {{ include "aex.chart" . }}
{{ include "aex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the server pods (the migration Job's pods are not selected). */}}
{{- define "aex.serverSelectorLabels" -}}
{{ include "aex.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "aex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aex.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aex.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret the pods read their environment from. */}}
{{- define "aex.secretName" -}}
{{- default (include "aex.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Environment variable that carries signing key KID: AEX_AUTH__KEYS__<KID>. */}}
{{- define "aex.keyEnvName" -}}
{{- printf "AEX_AUTH__KEYS__%s" (upper .) }}
{{- end }}

{{/*
Checks the values a chart-made Secret needs; fails the render with the reason. The schema checks
shapes; this checks what depends on several values.
*/}}
{{- define "aex.validateSecretValues" -}}
{{- if not .Values.existingSecret }}
{{- if not .Values.databaseUrl }}
{{- fail "databaseUrl is required (or set existingSecret to a Secret holding AEX_DATABASE_URL)" }}
{{- end }}
{{- if not .Values.auth.keys }}
{{- fail "auth.keys needs at least one signing key of 32+ characters (or set existingSecret)" }}
{{- end }}
{{- if not (hasKey .Values.auth.keys .Values.auth.activeKid) }}
{{- fail (printf "auth.activeKid %q names no key in auth.keys" .Values.auth.activeKid) }}
{{- end }}
{{- range $name, $_ := .Values.providerApiKeys }}
{{- if hasPrefix "AEX_" $name }}
{{- fail (printf "providerApiKeys.%s: AEX_* names are settings, not provider keys" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the server pods and the migration Job. */}}
{{- define "aex.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
# Service links would inject <SERVICE>_PORT-style variables; for a Service named "aex" they
# start with AEX_, which AEX reads as unknown settings and refuses to start.
enableServiceLinks: false
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
