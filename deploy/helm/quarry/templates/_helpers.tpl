{{/* The chart's name, or nameOverride. */}}
{{- define "quarry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: <release>-quarry, or the release name when it already says quarry. */}}
{{- define "quarry.fullname" -}}
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

{{/* KubeRay takes cluster names of at most 53 characters; its head Service adds "-head-svc". */}}
{{- define "quarry.rayClusterName" -}}
{{- printf "%s-ray" (include "quarry.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}

{{/* A RayJob name: at most 47 characters (KubeRay names its cluster after it). */}}
{{- define "quarry.rayJobName" -}}
{{- printf "%s-run" (include "quarry.fullname" . | trunc 40 | trimSuffix "-") }}
{{- end }}

{{/* The server's Deployment and Service: a Service name is a DNS label of at most 63 characters. */}}
{{- define "quarry.serverName" -}}
{{- printf "%s-server" (include "quarry.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{- define "quarry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quarry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "quarry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "quarry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "quarry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "quarry.secretName" -}}
{{- default (include "quarry.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Where the server submits attempts: server.rayAddress, else the chart's RayCluster head. */}}
{{- define "quarry.rayAddress" -}}
{{- if .Values.server.rayAddress }}
{{- .Values.server.rayAddress }}
{{- else if .Values.ray.cluster.enabled }}
{{- printf "http://%s-head-svc:8265" (include "quarry.rayClusterName" .) }}
{{- else }}
{{- fail "server.rayAddress: the chart makes no RayCluster (ray.cluster.enabled is false), so give the Ray dashboard's address, e.g. http://my-cluster-head-svc:8265" }}
{{- end }}
{{- end }}

{{/* A CPU quantity ("4", "500m", 2) as a number of CPUs. */}}
{{- define "quarry.cpus" -}}
{{- $q := toString . }}
{{- if hasSuffix "m" $q }}{{ divf (trimSuffix "m" $q) 1000 }}{{ else }}{{ float64 $q }}{{ end }}
{{- end }}

{{/* A memory quantity ("16Gi", "512M", bytes) in bytes. */}}
{{- define "quarry.bytes" -}}
{{- $q := toString . }}
{{- $unit := regexFind "(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)$" $q }}
{{- $scale := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000) $unit }}
{{- mulf (trimSuffix $unit $q) $scale | int64 }}
{{- end }}

{{/*
What the server may admit at once (--cpus, --memory, --gpus): server.capacity, else the
chart's worker groups at their maxReplicas, shared among the server's replicas. A cluster
scaled to zero has no live CPUs to count, so the server is told what it can grow to. Empty
when the server submits to a cluster the chart does not make: it then counts that one's.
*/}}
{{- define "quarry.capacityArgs" -}}
{{- $v := .Values }}
{{- $c := $v.server.capacity }}
{{- $cpus := 0.0 }}
{{- $bytes := 0.0 }}
{{- $gpus := 0 }}
{{- $counted := and $v.ray.cluster.enabled (not $v.server.rayAddress) }}
{{- if $counted }}
{{- range $name, $group := $v.ray.workerGroups }}
{{- if $group.enabled }}
{{- $limits := $group.resources.limits | default dict }}
{{- if not (and (hasKey $limits "cpu") (hasKey $limits "memory")) }}
{{- fail (printf "ray.workerGroups.%s.resources.limits: give cpu and memory; Ray reads a pod's size from them" $name) }}
{{- end }}
{{- $n := int64 $group.maxReplicas }}
{{- $cpus = addf $cpus (mulf $n (include "quarry.cpus" $limits.cpu)) }}
{{- $bytes = addf $bytes (mulf $n (include "quarry.bytes" $limits.memory)) }}
{{- $gpus = add $gpus (mul $n (int64 (get $limits "nvidia.com/gpu" | default 0))) }}
{{- end }}
{{- end }}
{{- $replicas := max 1 (int64 $v.server.replicas) }}
{{- $cpus = divf $cpus $replicas }}
{{- $bytes = divf $bytes $replicas }}
{{- $gpus = div $gpus $replicas }}
{{- end }}
{{- if or $c.cpus $counted }}
- --cpus
- {{ printf "%g" (float64 (default $cpus $c.cpus)) | quote }}
{{- end }}
{{- $memory := printf "%d" (int64 $bytes) }}
{{- if kindIs "string" $c.memory }}{{ $memory = $c.memory }}
{{- else if not (kindIs "invalid" $c.memory) }}{{ $memory = printf "%d" (int64 $c.memory) }}
{{- end }}
{{- if or $c.memory $counted }}
- --memory
- {{ $memory | quote }}
{{- end }}
{{- if or (not (kindIs "invalid" $c.gpus)) $counted }}
- --gpus
- {{ (kindIs "invalid" $c.gpus | ternary $gpus $c.gpus) | int64 | quote }}
{{- end }}
{{- end }}

{{/*
The Secret's optional keys, each read by reference and absent from a pod when the Secret has
no such key. QUARRY_DB, the job database, is only the server's.
*/}}
{{- define "quarry.secretKeys" -}}
QUARRY_STORE QUARRY_TRACKING_URI QUARRY_ARTIFACT_URI AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
{{- end }}

{{- define "quarry.secretEnv" -}}
{{- $secret := include "quarry.secretName" . -}}
{{- range (include "quarry.secretKeys" . | splitList " ") }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{/* A `ray start` option's value as text: Helm reads numbers as floats, which would print 1e+09. */}}
{{- define "quarry.paramText" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/*
The spec of a RayCluster, the chart's own or a RayJob's: a head that takes no work, and worker
groups that the autoscaler grows from minReplicas (0) to maxReplicas. Called with a dict:
root (the chart's context) and forJob (a RayJob's cluster gets the Secret's settings and
the workflow file).
*/}}
{{- define "quarry.rayClusterSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $withSecret := or .forJob $v.ray.secretEnv }}
{{- $withWorkflow := and $v.rayJob.enabled $v.rayJob.workflow (or .forJob $v.rayJob.useCluster) -}}
rayVersion: {{ $v.ray.version | quote }}
{{- if not .forJob }}
# A changed spec (a new image) recreates every pod, so that no node keeps the old Quarry.
upgradeStrategy:
  type: {{ $v.ray.cluster.upgradeStrategy }}
{{- end }}
enableInTreeAutoscaling: true
autoscalerOptions:
  version: {{ $v.ray.autoscaler.version }}
  upscalingMode: {{ $v.ray.autoscaler.upscalingMode }}
  idleTimeoutSeconds: {{ $v.ray.autoscaler.idleTimeoutSeconds | int64 }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  resources:
    {{- toYaml $v.ray.autoscaler.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
headGroupSpec:
  rayStartParams:
    {{- range $key, $value := merge (dict "num-cpus" "0" "dashboard-host" "0.0.0.0") $v.ray.head.rayStartParams }}
    {{ $key }}: {{ include "quarry.paramText" $value | quote }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "quarry.labels" $root | nindent 8 }}
        app.kubernetes.io/component: ray-head
    spec:
      {{- include "quarry.rayPodSpec" (dict "root" $root "placement" $v.ray.head "withWorkflow" $withWorkflow) | nindent 6 }}
      containers:
        - name: ray-head
          {{- include "quarry.rayContainer" (dict "root" $root "resources" $v.ray.head.resources "withSecret" $withSecret "withWorkflow" $withWorkflow) | nindent 10 }}
          ports:
            - name: gcs-server
              containerPort: 6379
            - name: dashboard
              containerPort: 8265
            - name: client
              containerPort: 10001
workerGroupSpecs:
  {{- range $name, $group := $v.ray.workerGroups }}
  {{- if $group.enabled }}
  {{- if gt (int $group.minReplicas) (int $group.maxReplicas) }}
  {{- fail (printf "ray.workerGroups.%s: minReplicas %v is above maxReplicas %v; lower minReplicas (0 scales the group to zero when idle)" $name $group.minReplicas $group.maxReplicas) }}
  {{- end }}
  - groupName: {{ $name }}
    replicas: {{ $group.minReplicas | int64 }}
    minReplicas: {{ $group.minReplicas | int64 }}
    maxReplicas: {{ $group.maxReplicas | int64 }}
    rayStartParams:
      {{- range $key, $value := $group.rayStartParams }}
      {{ $key }}: {{ include "quarry.paramText" $value | quote }}
      {{- else }} {}
      {{- end }}
    template:
      metadata:
        labels:
          {{- include "quarry.labels" $root | nindent 10 }}
          app.kubernetes.io/component: ray-worker
          quarry/worker-group: {{ $name }}
      spec:
        {{- include "quarry.rayPodSpec" (dict "root" $root "placement" $group "withWorkflow" $withWorkflow) | nindent 8 }}
        containers:
          - name: ray-worker
            {{- include "quarry.rayContainer" (dict "root" $root "resources" $group.resources "withSecret" $withSecret "withWorkflow" $withWorkflow) | nindent 12 }}
  {{- end }}
  {{- end }}
{{- end }}

{{/* What every Ray pod has besides its container: security, placement, the workflow volume. */}}
{{- define "quarry.rayPodSpec" -}}
{{- $v := .root.Values -}}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .withWorkflow }}
volumes:
  - name: workflow
    configMap:
      name: {{ include "quarry.rayJobName" .root }}-workflow
{{- end }}
{{- end }}

{{/* A Ray container: image, environment, resources (Ray reads its CPUs, memory, GPUs from
the limits), security. KubeRay adds the `ray start` command, /dev/shm and the probes. */}}
{{- define "quarry.rayContainer" -}}
{{- $v := .root.Values -}}
image: {{ include "quarry.image" .root }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if or .withSecret $v.ray.env }}
env:
  {{- if .withSecret }}
  {{- include "quarry.secretEnv" .root | trim | nindent 2 }}
  {{- end }}
  {{- with $v.ray.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  {{- toYaml $v.containerSecurityContext | nindent 2 }}
{{- if .withWorkflow }}
volumeMounts:
  - name: workflow
    mountPath: /etc/quarry/workflow
    readOnly: true
{{- end }}
{{- end }}
