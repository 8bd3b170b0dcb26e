{{/* Names and labels shared by the templates. */}}

{{- define "metamcp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "metamcp.fullname" -}}
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

{{- define "metamcp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "metamcp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* selector labels of one component: include with (list $ "controlplane") */}}
{{- define "metamcp.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "metamcp.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "metamcp.image" -}}
{{- $ := index . 0 -}}
{{- $img := index . 1 -}}
{{- $repo := default $.Values.image.repository $img.repository -}}
{{- $tag := default (default $.Chart.AppVersion $.Values.image.tag) $img.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{- define "metamcp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "metamcp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "metamcp.secretName" -}}
{{- default (printf "%s-secrets" (include "metamcp.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The Secret holding the database URL, and its key. */}}
{{- define "metamcp.databaseSecret" -}}
{{- if and (not .Values.postgres.bundled.enabled) .Values.postgres.external.existingSecret -}}
{{- .Values.postgres.external.existingSecret -}}
{{- else -}}
{{- printf "%s-connections" (include "metamcp.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- define "metamcp.databaseSecretKey" -}}
{{- if and (not .Values.postgres.bundled.enabled) .Values.postgres.external.existingSecret -}}
{{- .Values.postgres.external.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* Whether there is a Redis, and the Secret holding its URL. */}}
{{- define "metamcp.redisEnabled" -}}
{{- if or .Values.redis.bundled.enabled .Values.redis.external.url .Values.redis.external.existingSecret -}}true{{- end -}}
{{- end -}}
{{- define "metamcp.redisSecret" -}}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- printf "%s-connections" (include "metamcp.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- define "metamcp.redisSecretKey" -}}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.external.existingSecret -}}
{{- .Values.redis.external.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{/*
GOMEMLIMIT from the container's memory limit, so the Go runtime collects
harder before the kernel kills the container.
*/}}
{{- define "metamcp.gomemlimit" -}}
- name: GOMEMLIMIT
  valueFrom:
    resourceFieldRef:
      resource: limits.memory
{{- end -}}

{{/*
A value kept across upgrades: the given one, else the one already in the
release's Secret, else random. Include with (list $ secretName key given random).
*/}}
{{- define "metamcp.keptValue" -}}
{{- $ := index . 0 -}}
{{- $given := index . 3 -}}
{{- if $given -}}
{{- $given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" $.Release.Namespace (index . 1) -}}
{{- if and $existing (hasKey $existing.data (index . 2)) -}}
{{- index $existing.data (index . 2) | b64dec -}}
{{- else -}}
{{- index . 4 -}}
{{- end -}}
{{- end -}}
{{- end -}}
