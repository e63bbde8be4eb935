{{/* Names and labels shared by every template. */}}
{{- define "taskfan.labels" -}}
app.kubernetes.io/part-of: taskfan
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The Dapr app id of each service (the scorer's replicas share one). */}}
{{- define "taskfan.appId" -}}
{{- $ids := dict "ingest" "ingest" "workflow" "workflow" "validator" "validator" "enricher" "enricher" "scorer" "scorer" "console" "console" -}}
{{- get $ids . -}}
{{- end }}

{{/* Each gRPC app's port (as in dapr.yaml); ingest has none: its sidecar never calls it. */}}
{{- define "taskfan.appPort" -}}
{{- $ports := dict "workflow" "6001" "validator" "6002" "enricher" "6003" "console" "6004" "scorer" "6010" -}}
{{- get $ports . -}}
{{- end }}

{{- define "taskfan.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{ .Release.Name }}-redis.{{ .Release.Namespace }}.svc.cluster.local:6379
{{- else -}}
{{ required "redis.host is required when redis.enabled is false" .Values.redis.host }}
{{- end -}}
{{- end }}

{{/* A secret value: the one given in values, else the one already installed (kept on upgrade), else new. */}}
{{- define "taskfan.secretValue" -}}
{{- $given := index .root.Values.secrets .key -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if $given -}}
{{ $given | b64enc }}
{{- else if and $existing (index $existing.data .field) -}}
{{ index $existing.data .field }}
{{- else -}}
{{ randAlphaNum 43 | b64enc }}
{{- end -}}
{{- end }}
