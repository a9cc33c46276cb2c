{{/* The release's base name for every object. */}}
{{- define "medforge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The namespace of the scheduler's Lease: fixed in the code
     (operator/src/scheduler/controller.rs, LeaseConfig::new). */}}
{{- define "medforge.leaseNamespace" -}}medforge-system{{- end -}}

{{/* Labels every object carries. */}}
{{- define "medforge.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: medforge
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The labels that select one component's pods: call with (list $ "api"). */}}
{{- define "medforge.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The MedForge image. */}}
{{- define "medforge.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* One TOML value from a values entry: strings quoted (JSON's escapes
     are TOML's), whole numbers without a fraction, lists of either. */}}
{{- define "medforge.tomlValue" -}}
{{- if kindIs "string" . -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- if eq (float64 .) (floor .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if kindIs "slice" . -}}
[{{- range $i, $v := . -}}{{- if $i }}, {{ end -}}{{- include "medforge.tomlValue" $v -}}{{- end -}}]
{{- else -}}
{{- fail (printf "config: a value of kind %s cannot be written as TOML" (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/* `key = value` lines of a map, keys sorted. */}}
{{- define "medforge.tomlLines" -}}
{{- $lines := list -}}
{{- range $k, $v := . -}}
{{- $lines = append $lines (printf "%s = %s" $k (include "medforge.tomlValue" $v)) -}}
{{- end -}}
{{- join "\n" $lines -}}
{{- end -}}

{{/* The pod-level security context of the scheduler and the api: not root. */}}
{{- define "medforge.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context of the scheduler and the api. */}}
{{- define "medforge.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
