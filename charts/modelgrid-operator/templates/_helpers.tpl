{{/* The chart's name, or nameOverride. */}}
{{- define "modelgrid-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects: fullnameOverride, or release name + chart name
(just the release name when it already contains the chart name). */}}
{{- define "modelgrid-operator.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "modelgrid-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods (immutable in a Deployment). */}}
{{- define "modelgrid-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgrid-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The standard labels of every object of the release (the CRDs and policies keep their own,
so that they stay copies of crds/). */}}
{{- define "modelgrid-operator.labels" -}}
helm.sh/chart: {{ include "modelgrid-operator.chart" . }}
{{ include "modelgrid-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelgrid
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "modelgrid-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelgrid-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image; the tag defaults to the chart's appVersion. */}}
{{- define "modelgrid-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The benchmark image of the Jobs. */}}
{{- define "modelgrid-operator.benchmarkImage" -}}
{{- printf "%s:%s" .Values.benchmark.image.repository (toString .Values.benchmark.image.tag) }}
{{- end }}

{{/* The namespace of the benchmark Jobs, their pods and the model volumes: the operator's own,
never a tenant's, nor the release namespace (where the operator's credentials live). */}}
{{- define "modelgrid-operator.benchmarkNamespace" -}}
{{- if eq .Values.benchmark.namespace .Release.Namespace }}
{{- fail (printf "benchmark.namespace must not be the release namespace %q: benchmark pods run tenants' models, away from the operator" .Release.Namespace) }}
{{- end }}
{{- .Values.benchmark.namespace }}
{{- end }}

{{/* The label of the benchmark pods, as the operator sets it (modelgrid_operator.jobs). */}}
{{- define "modelgrid-operator.benchmarkSelectorLabels" -}}
app.kubernetes.io/name: modelgrid-benchmark
{{- end }}

{{/* benchmark.evidence.perNamespace as MODELGRID_EVIDENCE_CLAIMS: namespace=claim,... */}}
{{- define "modelgrid-operator.evidenceClaims" -}}
{{- $pairs := list }}
{{- range $ns, $claim := .Values.benchmark.evidence.perNamespace }}
{{- $pairs = append $pairs (printf "%s=%s" $ns $claim) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
