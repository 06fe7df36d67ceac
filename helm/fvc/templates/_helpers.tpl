{{/*
Helpers shared by every template. Names follow helm create's conventions; fvc.consumerGroup
is the one place the worker's app id (FVC_APP_ID) comes from, fvc.ingestGroup (built on it)
KEDA's consumerGroup.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fvc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name of every resource: fullnameOverride, else release-chart (once). */}}
{{- define "fvc.fullname" -}}
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

{{/* chart-version, the helm.sh/chart label. */}}
{{- define "fvc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the worker pods; never change them after a release exists. */}}
{{- define "fvc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fvc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "fvc.labels" -}}
helm.sh/chart: {{ include "fvc.chart" . }}
{{ include "fvc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fvc
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* commonAnnotations as a metadata.annotations block (indented for metadata), or nothing. */}}
{{- define "fvc.annotations" -}}
{{- with .Values.commonAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
The worker image: the GPU build when gpu.enabled, else the CPU build. A digest wins over a tag;
tags default to the chart's appVersion (GPU: appVersion-gpu). No template names an image:
every image comes from values through this helper.
*/}}
{{- define "fvc.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- if .Values.gpu.enabled -}}
{{- $repository := .Values.gpu.image.repository | default .Values.image.repository -}}
{{- if .Values.gpu.image.digest -}}
{{- printf "%s@%s" $repository .Values.gpu.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.gpu.image.tag | default (printf "%s-gpu" $tag) | toString) -}}
{{- end -}}
{{- else if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Image of the helm test pod: tests.image, else the worker image (it has Python). */}}
{{- define "fvc.testImage" -}}
{{- if .Values.tests.image.repository -}}
{{- printf "%s:%s" .Values.tests.image.repository (required "tests.image.tag is required with tests.image.repository" .Values.tests.image.tag | toString) -}}
{{- else -}}
{{- include "fvc.image" . -}}
{{- end -}}
{{- end -}}

{{/*
The Kafka consumer group of the Faust app: the worker's FVC_APP_ID comes from here.
Faust uses the app id as the group id while the app version is 1 (it appends -v<version> above
that), so the two stay equal.
*/}}
{{- define "fvc.consumerGroup" -}}
{{- .Values.consumerGroup | default (include "fvc.fullname" .) -}}
{{- end -}}

{{/*
The consumer group that reads the camera topics, whose lag KEDA watches: the app id with
Faust ingest, <app id>.ingest with settings.ingest=bulk (the worker's Settings.ingest_group: the
bulk reader cannot share Faust's group, whose partitions are then only its leader topic's).
*/}}
{{- define "fvc.ingestGroup" -}}
{{- if eq .Values.settings.ingest "bulk" -}}
{{- printf "%s.ingest" (include "fvc.consumerGroup" .) -}}
{{- else -}}
{{- include "fvc.consumerGroup" . -}}
{{- end -}}
{{- end -}}

{{/* Key prefix of this deployment's state in Redis. */}}
{{- define "fvc.redisNamespace" -}}
{{- .Values.settings.namespace | default (include "fvc.fullname" .) -}}
{{- end -}}

{{/* Name of the ServiceAccount the workers run as. */}}
{{- define "fvc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "fvc.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The clustering config exactly as the ConfigMap holds it (its checksum rolls the pods). */}}
{{- define "fvc.configJson" -}}
{{- toPrettyJson .Values.config -}}
{{- end -}}

{{/*
Topics KEDA watches, one per line: autoscaling.keda.topics, else every input stream's topic
(a stream without one uses <stream_id>.FeatureVectorRecord.json, as the worker does).
*/}}
{{- define "fvc.kedaTopics" -}}
{{- if .Values.autoscaling.keda.topics -}}
{{- range .Values.autoscaling.keda.topics }}
{{ . }}
{{- end -}}
{{- else -}}
{{- range .Values.config.input_stream_configs }}
{{ .topic | default (printf "%s.FeatureVectorRecord.json" .stream_id) }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Rules values.schema.json cannot express. Each failure names the values involved. Included by
every template, so `helm template` and `helm install` refuse such values whatever is rendered.
*/}}
{{- define "fvc.validate" -}}
{{- $a := .Values.autoscaling -}}
{{- if and $a.keda.enabled $a.hpa.enabled -}}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are both true: turn on one autoscaler (KEDA on consumer lag, or the CPU HPA), never both" -}}
{{- end -}}
{{- if and (or $a.keda.enabled $a.hpa.enabled) (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" $a.minReplicas $a.maxReplicas) -}}
{{- end -}}
{{- if and (or $a.keda.enabled $a.hpa.enabled) (not $a.allowIdleConsumers) (gt (int $a.maxReplicas) (int .Values.settings.topicPartitions)) -}}
{{- fail (printf "autoscaling.maxReplicas (%v) is above settings.topicPartitions (%v): workers beyond the partition count stay idle; lower it or set autoscaling.allowIdleConsumers=true" $a.maxReplicas .Values.settings.topicPartitions) -}}
{{- end -}}
{{- if and $a.hpa.enabled (lt (int $a.minReplicas) 1) -}}
{{- fail "autoscaling.minReplicas must be at least 1 with autoscaling.hpa.enabled (only KEDA scales to zero)" -}}
{{- end -}}
{{- if and $a.keda.enabled (ne .Values.kafka.securityProtocol "PLAINTEXT") (not $a.keda.authenticationRef.name) -}}
{{- fail (printf "autoscaling.keda.authenticationRef.name is required with kafka.securityProtocol=%s: KEDA connects to Kafka itself and needs a TriggerAuthentication with the credentials" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- $k := .Values.kafka -}}
{{- if and (hasPrefix "SASL" $k.securityProtocol) (has $k.sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512")) -}}
{{- if not $k.sasl.existingSecret -}}
{{- fail (printf "kafka.sasl.existingSecret is required with kafka.securityProtocol=%s and kafka.sasl.mechanism=%s: name the Secret that holds the password" $k.securityProtocol $k.sasl.mechanism) -}}
{{- end -}}
{{- if and (not $k.sasl.usernameKey) (not $k.sasl.username) -}}
{{- fail (printf "kafka.sasl.username (or kafka.sasl.usernameKey) is required with kafka.sasl.mechanism=%s" $k.sasl.mechanism) -}}
{{- end -}}
{{- end -}}
{{- if and $k.tls.existingSecret (not (hasSuffix "SSL" $k.securityProtocol)) -}}
{{- fail (printf "kafka.tls.existingSecret is set but kafka.securityProtocol is %s: use SSL or SASL_SSL" $k.securityProtocol) -}}
{{- end -}}
{{- if and (or $k.tls.certKey $k.tls.keyKey) (not (and $k.tls.certKey $k.tls.keyKey)) -}}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together: give both for mutual TLS, or neither" -}}
{{- end -}}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]+@" .Values.redis.url -}}
{{- fail "redis.url contains a password: put the password in a Secret and name it in redis.existingSecret (key redis.passwordKey)" -}}
{{- end -}}
{{- $topics := list -}}
{{- $streams := list -}}
{{- range .Values.config.input_stream_configs -}}
{{- if has .stream_id $streams -}}
{{- fail (printf "config.input_stream_configs: stream_id %s is used by more than one stream" .stream_id) -}}
{{- end -}}
{{- $streams = append $streams .stream_id -}}
{{- $topic := .topic | default (printf "%s.FeatureVectorRecord.json" .stream_id) -}}
{{- if has $topic $topics -}}
{{- fail (printf "config.input_stream_configs: topic %s is used by more than one stream" $topic) -}}
{{- end -}}
{{- $topics = append $topics $topic -}}
{{- end -}}
{{- end -}}
