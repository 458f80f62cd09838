{{/*
Chart name, truncated to 63 characters (the DNS label limit of resource names).
*/}}
{{- define "trainpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name alone when it already contains the chart
name. Suffixes such as "-pipeline" are added by callers, so keep room for them.
*/}}
{{- define "trainpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "trainpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment selector cannot change).
*/}}
{{- define "trainpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels on every resource.
*/}}
{{- define "trainpipe.labels" -}}
helm.sh/chart: {{ include "trainpipe.chart" . }}
{{ include "trainpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainpipe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the serving pods.
*/}}
{{- define "trainpipe.serving.selectorLabels" -}}
{{ include "trainpipe.selectorLabels" . }}
app.kubernetes.io/component: serving
{{- end }}

{{/*
Name of the serving ServiceAccount.
*/}}
{{- define "trainpipe.serving.serviceAccountName" -}}
{{- if .Values.serving.serviceAccount.create }}
{{- default (printf "%s-serving" (include "trainpipe.fullname" .)) .Values.serving.serviceAccount.name }}
{{- else }}
{{- required "serving.serviceAccount.name is required when serving.serviceAccount.create is false" .Values.serving.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the pipeline ServiceAccount (retraining CronJob and pipeline runs).
*/}}
{{- define "trainpipe.pipeline.serviceAccountName" -}}
{{- if .Values.pipeline.serviceAccount.create }}
{{- default (printf "%s-pipeline" (include "trainpipe.fullname" .)) .Values.pipeline.serviceAccount.name }}
{{- else }}
{{- required "pipeline.serviceAccount.name is required when pipeline.serviceAccount.create is false" .Values.pipeline.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference from {repository, tag, digest}: the digest wins, the tag defaults to the chart
appVersion (the package version), and "latest" is refused so every rollout names one build.
Call with (dict "image" .Values.serving.image "root" .).
*/}}
{{- define "trainpipe.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image tag 'latest' is not allowed: set a version (the chart appVersion is the default)" }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
S3 environment of the server: endpoint/region when set, static credentials from an existing
Secret by reference when named (otherwise the AWS default chain: IRSA, instance role, ...).
*/}}
{{- define "trainpipe.s3Env" -}}
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.s3.accessKeyIdKey | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.s3.secretAccessKeyKey | quote }}
{{- end }}
{{- end }}
