{{/* Names, labels and the pod parts every workload shares. */}}

{{- define "vlgenrm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vlgenrm.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. */}}
{{- define "vlgenrm.component" -}}
{{- printf "%s-%s" (include "vlgenrm.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vlgenrm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vlgenrm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vlgenrm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "vlgenrm.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: vlgenrm
{{- end }}

{{/* Labels of resources that belong to no one component. */}}
{{- define "vlgenrm.commonLabels" -}}
{{ include "vlgenrm.labels" (dict "root" . "component" "platform") }}
{{- end }}

{{- define "vlgenrm.image" -}}
{{- $ref := index .root.Values.image .image }}
{{- printf "%s:%s" $ref.repository (default .root.Chart.AppVersion $ref.tag) }}
{{- end }}

{{- define "vlgenrm.workloadServiceAccount" -}}
{{- include "vlgenrm.fullname" . }}
{{- end }}

{{- define "vlgenrm.operatorServiceAccount" -}}
{{- include "vlgenrm.component" (dict "root" . "component" "operator") }}
{{- end }}

{{- define "vlgenrm.peering" -}}
{{- default (include "vlgenrm.fullname" .) .Values.operator.peering }}
{{- end }}

{{- define "vlgenrm.s3SecretName" -}}
{{- default (include "vlgenrm.component" (dict "root" . "component" "s3")) .Values.s3.existingSecret }}
{{- end }}

{{- define "vlgenrm.kafkaSecretName" -}}
{{- default (include "vlgenrm.component" (dict "root" . "component" "kafka")) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "vlgenrm.apiKeysSecretName" -}}
{{- default (include "vlgenrm.component" (dict "root" . "component" "api-keys")) .Values.scorer.apiKeys.existingSecret }}
{{- end }}

{{- define "vlgenrm.hasS3Credentials" -}}
{{- if or .Values.s3.existingSecret .Values.s3.accessKey .Values.s3.secretKey }}true{{ end }}
{{- end }}

{{- define "vlgenrm.hasApiKeys" -}}
{{- if or .Values.scorer.apiKeys.existingSecret .Values.scorer.apiKeys.keys }}true{{ end }}
{{- end }}

{{/* The Ray cluster the trainer drives: the chart's RayCluster (Ray Client port) or trainer.rayAddress. */}}
{{- define "vlgenrm.trainerRayAddress" -}}
{{- if .Values.trainer.rayAddress }}
{{- .Values.trainer.rayAddress }}
{{- else }}
{{- printf "ray://%s-head-svc.%s.svc:10001" (include "vlgenrm.component" (dict "root" . "component" "trainer-ray")) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Env of every vlgenrm container: the config file, secrets as VLGENRM_* variables, caches in /tmp. */}}
{{- define "vlgenrm.env" -}}
- name: VLGENRM_CONFIG
  value: /etc/vlgenrm/config.yaml
- name: HOME
  value: /tmp/home
- name: HF_HOME
  value: /tmp/huggingface
- name: PYTHONUNBUFFERED
  value: "1"
{{- if include "vlgenrm.hasS3Credentials" . }}
- name: VLGENRM_STORE__ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "vlgenrm.s3SecretName" . }}
      key: {{ ternary .Values.s3.accessKeyKey "access-key" (ne .Values.s3.existingSecret "") }}
- name: VLGENRM_STORE__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "vlgenrm.s3SecretName" . }}
      key: {{ ternary .Values.s3.secretKeyKey "secret-key" (ne .Values.s3.existingSecret "") }}
{{- end }}
{{- if .Values.kafka.sasl.mechanism }}
- name: VLGENRM_BUS__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "vlgenrm.kafkaSecretName" . }}
      key: {{ ternary .Values.kafka.sasl.usernameKey "username" (ne .Values.kafka.sasl.existingSecret "") }}
- name: VLGENRM_BUS__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vlgenrm.kafkaSecretName" . }}
      key: {{ ternary .Values.kafka.sasl.passwordKey "password" (ne .Values.kafka.sasl.existingSecret "") }}
{{- end }}
{{- end }}

{{- define "vlgenrm.volumeMounts" -}}
- name: config
  mountPath: /etc/vlgenrm
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "vlgenrm.volumes" -}}
- name: config
  configMap:
    name: {{ include "vlgenrm.component" (dict "root" . "component" "config") }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* /dev/shm in memory: the container default (64 MiB) starves Ray's object store, NCCL and vLLM. */}}
{{- define "vlgenrm.shmVolume" -}}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
{{- end }}

{{- define "vlgenrm.shmMount" -}}
- name: shm
  mountPath: /dev/shm
{{- end }}

{{/* Resources with the GPUs of a component: .resources, .gpus, .root */}}
{{- define "vlgenrm.resources" -}}
{{- $res := deepCopy .resources }}
{{- if gt (int .gpus) 0 }}
{{- $limits := default (dict) $res.limits }}
{{- $_ := set $limits .root.Values.gpuResource (int .gpus) }}
{{- $_ := set $res "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/* nodeSelector / tolerations / affinity of a Scheduling value. */}}
{{- define "vlgenrm.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "vlgenrm.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
