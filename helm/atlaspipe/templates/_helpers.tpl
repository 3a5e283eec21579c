{{/* Names ---------------------------------------------------------------------------------- */}}
{{- define "atlaspipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "atlaspipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "atlaspipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "atlaspipe.labels" -}}
helm.sh/chart: {{ include "atlaspipe.chart" . }}
{{ include "atlaspipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: atlaspipe
{{- end }}

{{- define "atlaspipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atlaspipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Images: always repository:tag, the tag defaults to the chart appVersion (= package version). */}}
{{- define "atlaspipe.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if or (eq $tag "latest") (eq $tag "") }}{{ fail "image.tag must be a pinned version, not latest" }}{{ end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "atlaspipe.thirdPartyImage" -}}
{{- if or (eq (toString .tag) "latest") (eq (toString .tag) "") }}{{ fail (printf "%s: pin an image tag, not latest" .repository) }}{{ end }}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------------------------- */}}
{{- define "atlaspipe.secretName" -}}
{{- printf "%s-credentials" (include "atlaspipe.fullname" .) }}
{{- end }}

{{- define "atlaspipe.rabbitmqSecretName" -}}
{{- .Values.rabbitmq.auth.existingSecret | default (include "atlaspipe.secretName" .) }}
{{- end }}

{{- define "atlaspipe.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "atlaspipe.secretName" .) }}
{{- end }}

{{- define "atlaspipe.rabbitmqHost" -}}
{{- printf "%s-rabbitmq" (include "atlaspipe.fullname" .) }}
{{- end }}

{{- define "atlaspipe.redisHost" -}}
{{- printf "%s-redis" (include "atlaspipe.fullname" .) }}
{{- end }}

{{/*
Connection environment shared by every atlaspipe container.
In-chart RabbitMQ/Redis: the password comes from the same Secret key RabbitMQ/Redis are configured
with, and the URL is assembled by Kubernetes' $(VAR) expansion, so worker and broker credentials
cannot differ and no password is written into the manifest. External services: the whole URL comes
from a Secret.
*/}}
{{- define "atlaspipe.connectionEnv" -}}
{{- if .Values.rabbitmq.enabled }}
- name: ATLASPIPE_BROKER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "atlaspipe.rabbitmqSecretName" . }}
      key: {{ .Values.rabbitmq.auth.existingSecretPasswordKey | default "rabbitmq-password" }}
- name: ATLASPIPE_BROKER_URL
  value: {{ printf "amqp://%s:$(ATLASPIPE_BROKER_PASSWORD)@%s:5672/%s" .Values.rabbitmq.auth.username (include "atlaspipe.rabbitmqHost" .) (.Values.rabbitmq.vhost | urlquery) | quote }}
{{- else }}
- name: ATLASPIPE_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalBroker.existingSecret | default (include "atlaspipe.secretName" .) }}
      key: {{ .Values.externalBroker.existingSecretKey | default "broker-url" }}
{{- end }}
{{- if .Values.redis.enabled }}
- name: ATLASPIPE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "atlaspipe.redisSecretName" . }}
      key: {{ .Values.redis.auth.existingSecretPasswordKey | default "redis-password" }}
- name: ATLASPIPE_RESULT_BACKEND
  value: {{ printf "redis://:$(ATLASPIPE_REDIS_PASSWORD)@%s:6379/0" (include "atlaspipe.redisHost" .) | quote }}
{{- else }}
- name: ATLASPIPE_RESULT_BACKEND
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalBackend.existingSecret | default (include "atlaspipe.secretName" .) }}
      key: {{ .Values.externalBackend.existingSecretKey | default "result-backend" }}
{{- end }}
- name: ATLASPIPE_OUTPUT_DIR
  value: /data/outputs
- name: ATLASPIPE_CACHE_DIR
  value: /data/cache
- name: ATLASPIPE_INPUT_ROOTS
  value: /data/cache
- name: ATLASPIPE_METRICS_PORT
  value: {{ .Values.workers.metricsPort | quote }}
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "atlaspipe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "atlaspipe.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Volumes of the data PVCs plus a writable /tmp (the root filesystem is read-only). */}}
{{- define "atlaspipe.dataVolumes" -}}
- name: cache
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.cache.existingClaim | default (printf "%s-cache" (include "atlaspipe.fullname" .)) }}
- name: outputs
  persistentVolumeClaim:
    claimName: {{ .Values.persistence.outputs.existingClaim | default (printf "%s-outputs" (include "atlaspipe.fullname" .)) }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "atlaspipe.dataVolumeMounts" -}}
- name: cache
  mountPath: /data/cache
- name: outputs
  mountPath: /data/outputs
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* An init container that waits until the broker accepts TCP connections (Jobs only). */}}
{{- define "atlaspipe.waitForBroker" -}}
- name: wait-for-broker
  image: {{ include "atlaspipe.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import os, socket, time, urllib.parse
      url = urllib.parse.urlsplit(os.environ["ATLASPIPE_BROKER_URL"])
      for _ in range(120):
          try:
              socket.create_connection((url.hostname, url.port or 5672), timeout=3).close()
              break
          except OSError:
              time.sleep(5)
      else:
          raise SystemExit("broker not reachable")
  env:
    {{- include "atlaspipe.connectionEnv" . | nindent 4 }}
  securityContext:
    {{- include "atlaspipe.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 32Mi}
    limits: {cpu: 100m, memory: 64Mi}
{{- end }}

{{/* secretValue: explicit value, else the one stored in the live Secret, else a new random one. */}}
{{- define "atlaspipe.secretValue" -}}
{{- if .value }}
{{- .value }}
{{- else if hasKey .old .key }}
{{- index .old .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{- define "atlaspipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "atlaspipe.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "atlaspipe.rabbitmqConfig" -}}
# Same settings as compose/rabbitmq/rabbitmq.conf. Credentials come from the Secret, never here.
90-atlaspipe.conf: |
  # Unacked deliveries older than this close the consumer's channel (default 30 min); atlaspipe
  # acks late, so long chunks/retries would be requeued and redone. See values.yaml.
  consumer_timeout = {{ int64 .Values.rabbitmq.consumerTimeoutMs }}
  listeners.tcp.default = 5672
  management.tcp.port = 15672
  prometheus.tcp.port = 15692
  prometheus.return_per_object_metrics = true
  vm_memory_high_watermark.relative = {{ .Values.rabbitmq.memoryHighWatermark }}
  disk_free_limit.absolute = 1GB
enabled_plugins: |
  [rabbitmq_management,rabbitmq_prometheus].
{{- end }}

{{/*
The Prometheus configuration: files/prometheus.yml (a symlink to compose/prometheus.yml, the file
Compose mounts) with every dns_sd name N replaced by this release's Service
<fullname>-N.<namespace>.svc.<clusterDomain>. Names whose Service this release does not deploy
are dropped, and so is a job left without names (e.g. rabbitmq with an external broker).
*/}}
{{- define "atlaspipe.prometheusConfig" -}}
{{- $fullname := include "atlaspipe.fullname" . }}
{{- $cfg := .Files.Get "files/prometheus.yml" | fromYaml }}
{{- if not $cfg.scrape_configs }}{{ fail "files/prometheus.yml is missing or has no scrape_configs" }}{{ end }}
{{- $deployed := dict "flower" .Values.flower.enabled "rabbitmq" .Values.rabbitmq.enabled }}
{{- range $stage, $_ := .Values.workers.stages }}{{ $_ := set $deployed $stage true }}{{ end }}
{{- $jobs := list }}
{{- range $job := $cfg.scrape_configs }}
{{- $keep := true }}
{{- if hasKey $job "dns_sd_configs" }}
{{- $sds := list }}
{{- range $sd := $job.dns_sd_configs }}
{{- $names := list }}
{{- range $n := $sd.names }}
{{- if index $deployed $n }}
{{- $names = append $names (printf "%s-%s.%s.svc.%s" $fullname $n $.Release.Namespace $.Values.clusterDomain) }}
{{- end }}
{{- end }}
{{- if $names }}
{{- $_ := set $sd "names" $names }}
{{- $sds = append $sds $sd }}
{{- end }}
{{- end }}
{{- if $sds }}
{{- $_ := set $job "dns_sd_configs" $sds }}
{{- else }}
{{- $keep = false }}
{{- end }}
{{- end }}
{{- if $keep }}
{{- $jobs = append $jobs $job }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "scrape_configs" $jobs }}
{{- toYaml $cfg }}
{{- end }}
