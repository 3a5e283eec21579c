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

{{- define "atlaspipe.configName" -}}
{{- printf "%s-config" (include "atlaspipe.fullname" .) }}
{{- end }}

{{/*
The data of the release's Secret (key -> plain value), as YAML. Each password is, in this order:
the value given in values, the value already stored in the live Secret (lookup: upgrades keep
it), or a new random 32-character one. Computed once per render and kept in .Values, so the
Secret and every pod's checksum/secret annotation see the same values.
A RabbitMQ password that differs from the stored one is refused: RabbitMQ created its user with
the stored one on first boot (the PVC keeps it), so the workers would be locked out.
*/}}
{{- define "atlaspipe.secretData" -}}
{{- if not (hasKey .Values "atlaspipeRenderCache") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "atlaspipe.secretName" .) | default dict }}
{{- $old := get $existing "data" | default dict }}
{{- $data := dict }}
{{- if and .Values.rabbitmq.enabled (not .Values.rabbitmq.auth.existingSecret) }}
{{- $stored := "" }}
{{- if hasKey $old "rabbitmq-password" }}{{ $stored = index $old "rabbitmq-password" | b64dec }}{{ end }}
{{- if and $stored .Values.rabbitmq.auth.password (ne $stored .Values.rabbitmq.auth.password) }}
{{- fail (printf "rabbitmq.auth.password differs from the password in Secret %s, which RabbitMQ's data volume was initialised with: RabbitMQ would keep the old one and the workers would be locked out. To rotate it, change it inside RabbitMQ (kubectl exec ... -- rabbitmqctl change_password %s NEW) and in that Secret, then upgrade; or leave rabbitmq.auth.password empty to keep the stored one." (include "atlaspipe.secretName" .) .Values.rabbitmq.auth.username) }}
{{- end }}
{{- $pw := include "atlaspipe.secretValue" (dict "old" $old "key" "rabbitmq-password" "value" .Values.rabbitmq.auth.password) }}
{{- $_ := set $data "rabbitmq-password" $pw }}
{{- if .Values.keda.enabled }}
{{- $_ := set $data .Values.externalBroker.managementUrlKey (printf "http://%s:%s@%s:15672/%s" .Values.rabbitmq.auth.username $pw (include "atlaspipe.rabbitmqHost" .) (.Values.rabbitmq.vhost | urlquery)) }}
{{- end }}
{{- end }}
{{- if and (not .Values.rabbitmq.enabled) (not .Values.externalBroker.existingSecret) }}
{{- $_ := set $data .Values.externalBroker.existingSecretKey (required "rabbitmq.enabled=false needs externalBroker.existingSecret or externalBroker.url" .Values.externalBroker.url) }}
{{- end }}
{{- if and .Values.redis.enabled (not .Values.redis.auth.existingSecret) }}
{{- $_ := set $data "redis-password" (include "atlaspipe.secretValue" (dict "old" $old "key" "redis-password" "value" .Values.redis.auth.password)) }}
{{- end }}
{{- if and (not .Values.redis.enabled) (not .Values.externalBackend.existingSecret) }}
{{- $_ := set $data .Values.externalBackend.existingSecretKey (required "redis.enabled=false needs externalBackend.existingSecret or externalBackend.url" .Values.externalBackend.url) }}
{{- end }}
{{- if and .Values.flower.enabled (not .Values.flower.auth.existingSecret) }}
{{- $pw := include "atlaspipe.secretValue" (dict "old" $old "key" "flower-password" "value" .Values.flower.auth.password) }}
{{- $_ := set $data "flower-password" $pw }}
{{- $_ := set $data "flower-basic-auth" (printf "%s:%s" .Values.flower.auth.username $pw) }}
{{- end }}
{{- if and .Values.web.enabled (not .Values.web.auth.existingSecret) }}
{{- $pw := include "atlaspipe.secretValue" (dict "old" $old "key" "web-password" "value" .Values.web.auth.password) }}
{{- $_ := set $data "web-password" $pw }}
{{- $_ := set $data "web-auth" (printf "%s:%s" .Values.web.auth.username $pw) }}
{{- end }}
{{- $_ := set .Values "atlaspipeRenderCache" (dict "secretData" $data) }}
{{- end }}
{{- toYaml .Values.atlaspipeRenderCache.secretData }}
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

{{/*
Pod annotations that roll the pods when what they read changes: the release's Secret (or the
names of the existing Secrets used instead) and the shared ConfigMap.
*/}}
{{- define "atlaspipe.checksums" -}}
checksum/secret: {{ include "atlaspipe.secretChecksum" . }}
checksum/config: {{ include "atlaspipe.configData" . | sha256sum }}
{{- end }}

{{- define "atlaspipe.secretChecksum" -}}
{{- list (include "atlaspipe.secretData" .) .Values.rabbitmq.auth.existingSecret .Values.redis.auth.existingSecret .Values.externalBroker.existingSecret .Values.externalBackend.existingSecret .Values.flower.auth.existingSecret .Values.web.auth.existingSecret | toJson | sha256sum }}
{{- end }}

{{/* The non-secret environment of every atlaspipe container (ConfigMap <fullname>-config). */}}
{{- define "atlaspipe.configData" -}}
ATLASPIPE_OUTPUT_DIR: /data/outputs
ATLASPIPE_CACHE_DIR: /data/cache
ATLASPIPE_INPUT_ROOTS: /data/cache
ATLASPIPE_METRICS_PORT: {{ .Values.workers.metricsPort | quote }}
ATLASPIPE_PROBE_DIR: {{ .Values.workers.probeDir | quote }}
MPLCONFIGDIR: /tmp/matplotlib
{{- end }}

{{/*
Connection environment shared by every atlaspipe container that talks to the broker.
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
      key: {{ .Values.externalBroker.existingSecretKey }}
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
      key: {{ .Values.externalBackend.existingSecretKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "atlaspipe.envFrom" -}}
- configMapRef:
    name: {{ include "atlaspipe.configName" . }}
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
    - python3
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

{{- define "atlaspipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "atlaspipe.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* A worker probe: the heartbeat file is younger than workers.heartbeatMaxAgeSeconds (+ ready). */}}
{{- define "atlaspipe.workerProbe" -}}
{{- $fresh := printf "test -n \"$(find \"$ATLASPIPE_PROBE_DIR/heartbeat\" -newermt '-%v seconds' 2>/dev/null)\"" .root.Values.workers.heartbeatMaxAgeSeconds }}
exec:
  command:
    - sh
    - -c
    {{- if .ready }}
    - {{ printf "test -f \"$ATLASPIPE_PROBE_DIR/ready\" && %s" $fresh | quote }}
    {{- else }}
    - {{ $fresh | quote }}
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
<fullname>-N.<namespace>.svc.<clusterDomain>. The worker names (the stages of the shared file)
become the release's worker stages, whatever they are called; other names whose Service this
release does not deploy are dropped, and so is a job left without names (e.g. rabbitmq with an
external broker).
*/}}
{{- define "atlaspipe.prometheusConfig" -}}
{{- $fullname := include "atlaspipe.fullname" . }}
{{- $cfg := .Files.Get "files/prometheus.yml" | fromYaml }}
{{- if not $cfg.scrape_configs }}{{ fail "files/prometheus.yml is missing or has no scrape_configs" }}{{ end }}
{{- $deployed := dict "flower" .Values.flower.enabled "rabbitmq" .Values.rabbitmq.enabled "exporter" .Values.exporter.enabled }}
{{- $stages := list }}
{{- range $stage, $cfg := .Values.workers.stages }}{{ if $cfg }}{{ $stages = append $stages $stage }}{{ end }}{{ end }}
{{- $workerNames := list "load" "process" "aggregate" "plot" }}
{{- $jobs := list }}
{{- range $job := $cfg.scrape_configs }}
{{- $keep := true }}
{{- if hasKey $job "dns_sd_configs" }}
{{- $sds := list }}
{{- range $sd := $job.dns_sd_configs }}
{{- $names := list }}
{{- $isWorkers := false }}
{{- range $n := $sd.names }}{{ if has $n $workerNames }}{{ $isWorkers = true }}{{ end }}{{ end }}
{{- $wanted := $sd.names }}
{{- if $isWorkers }}{{ $wanted = $stages }}{{ end }}
{{- range $n := $wanted }}
{{- if or $isWorkers (index $deployed $n) }}
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
