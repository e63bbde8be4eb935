{{/* Names and labels shared by every template. */}}
{{- define "taskfan.labels" -}}
app.kubernetes.io/part-of: taskfan
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* A Kubernetes object's name: the release's name, then the part's (`taskfan-ingest`), so that the objects of
two releases never share a name. Call it with (dict "root" $ "name" "ingest"). */}}
{{- define "taskfan.name" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* The Dapr app id of each service (the scorer's replicas share one). Dapr's names (app ids, components,
Configuration, Resiliency) are the code's constants (src/taskfan/contracts.py), not the release's: one Taskfan
release per namespace (README, "From your laptop to a cluster"). */}}
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

{{/* The Secret with ingest-token, console-view-token, redis-password, redis-keeper-password and
redis-console-password: the chart's own, or the one named by secrets.existingSecret. */}}
{{- define "taskfan.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" .Release.Name) -}}
{{- end }}

{{/* The Secret (one key, `token`) of an app id's Dapr API token: its sidecar and that app alone hold it. */}}
{{- define "taskfan.daprTokenSecret" -}}
{{- printf "%s-dapr-api-token-%s" .root.Release.Name .appId | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* The app ids that get a Dapr API token of their own: Taskfan's, and the outside ones the values grant a
topic (their sidecars use the pub/sub; examples/k8s-subscriber.yaml). */}}
{{- define "taskfan.tokenAppIds" -}}
{{- $ids := list "ingest" "workflow" "validator" "enricher" "scorer" -}}
{{- if .Values.services.console.enabled }}{{ $ids = append $ids "console" }}{{ end -}}
{{- concat $ids .Values.outcomeSubscribers .Values.tasksPublishers | uniq | toJson -}}
{{- end }}

{{/* A secret value: the one given (`given`), else the one already installed (kept on upgrade), else new.
Without a cluster (`helm template`) nothing is installed, so a generated value differs on every run. */}}
{{- define "taskfan.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if .given -}}
{{ .given | b64enc }}
{{- else if and $existing (index ($existing.data | default dict) .field) -}}
{{ index $existing.data .field }}
{{- else -}}
{{ randAlphaNum 43 | b64enc }}
{{- end -}}
{{- end }}

{{/* What every pod of the chart shares: its service account, pull secrets and scheduling. */}}
{{- define "taskfan.podScheduling" -}}
serviceAccountName: {{ include "taskfan.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "taskfan.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "taskfan.name" (dict "root" . "name" "app")) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end }}

{{/* The Host headers ingest or the console answers: its Service's in-cluster names (the probe and in-cluster
clients use them), then the values' own (`hosts`, e.g. an ingress's name). */}}
{{- define "taskfan.hosts" -}}
{{- $svc := include "taskfan.name" (dict "root" .root "name" .name) -}}
{{- $p := .port -}}
{{- $ns := .root.Release.Namespace -}}
{{- $names := list (printf "%s:%v" $svc $p) (printf "%s.%s:%v" $svc $ns $p) (printf "%s.%s.svc:%v" $svc $ns $p) (printf "%s.%s.svc.cluster.local:%v" $svc $ns $p) -}}
{{- concat $names .hosts | uniq | join "," -}}
{{- end }}
