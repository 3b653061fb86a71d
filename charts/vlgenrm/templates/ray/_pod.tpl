{{/*
A KubeRay pod template: the GPU image, the platform's config and secrets, /tmp as the only
writable path. Params: root, component, group (a RayGroup value), node ("head" | "worker"),
apiKeys (mount the scorer's key file).
*/}}
{{- define "vlgenrm.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "vlgenrm.labels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
spec:
  serviceAccountName: {{ include "vlgenrm.workloadServiceAccount" $root }}
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with include "vlgenrm.imagePullSecrets" $root }}{{ . | trim | nindent 2 }}{{- end }}
  {{- with include "vlgenrm.scheduling" .group.scheduling }}{{ . | trim | nindent 2 }}{{- end }}
  containers:
    - name: {{ eq .node "head" | ternary "ray-head" "ray-worker" }}
      image: {{ include "vlgenrm.image" (dict "root" $root "image" "gpu") }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      env:
        {{- include "vlgenrm.env" $root | nindent 8 }}
        - name: RAY_USAGE_STATS_ENABLED
          value: "0"
        {{- if and (eq .node "head") (eq .component "trainer-ray") }}
        # Ray Client's proxier forks a server per driver while gRPC threads run; with gRPC's fork
        # handlers on, that child often dies (ray-project/ray#63202).
        - name: GRPC_ENABLE_FORK_SUPPORT
          value: "0"
        {{- end }}
      {{- if eq .node "head" }}
      ports:
        - name: gcs-server
          containerPort: 6379
        - name: dashboard
          containerPort: 8265
        - name: client
          containerPort: 10001
        {{- if eq .component "scorer" }}
        - name: serve
          containerPort: 8000
        {{- end }}
      {{- end }}
      resources:
        {{- include "vlgenrm.resources" (dict "root" $root "resources" .group.resources "gpus" .group.gpus) | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "vlgenrm.volumeMounts" $root | nindent 8 }}
        {{- include "vlgenrm.shmMount" $root | nindent 8 }}
        {{- if .apiKeys }}
        - name: api-keys
          mountPath: /etc/vlgenrm-api-keys
          readOnly: true
        {{- end }}
  volumes:
    {{- include "vlgenrm.volumes" $root | nindent 4 }}
    {{- include "vlgenrm.shmVolume" $root | nindent 4 }}
    {{- if .apiKeys }}
    - name: api-keys
      secret:
        secretName: {{ include "vlgenrm.apiKeysSecretName" $root }}
    {{- end }}
{{- end }}

{{/* A RayCluster spec: params root, component, values (.head, .workers, .autoscaling), apiKeys. */}}
{{- define "vlgenrm.rayClusterSpec" -}}
{{- $v := .values -}}
rayVersion: {{ .root.Values.rayVersion | quote }}
enableInTreeAutoscaling: {{ default false $v.autoscaling }}
headGroupSpec:
  rayStartParams:
    dashboard-host: "0.0.0.0"
  template:
    {{- include "vlgenrm.rayPodTemplate" (dict "root" .root "component" .component "group" $v.head "node" "head" "apiKeys" .apiKeys) | nindent 4 }}
workerGroupSpecs:
  - groupName: {{ gt (int $v.workers.gpus) 0 | ternary "gpu" "cpu" }}
    replicas: {{ $v.workers.replicas }}
    minReplicas: {{ $v.workers.minReplicas }}
    maxReplicas: {{ max $v.workers.maxReplicas $v.workers.replicas }}
    rayStartParams: {}
    template:
      {{- include "vlgenrm.rayPodTemplate" (dict "root" .root "component" .component "group" $v.workers "node" "worker" "apiKeys" .apiKeys) | nindent 6 }}
{{- end }}
