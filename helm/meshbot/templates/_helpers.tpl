{{/* Names, labels and the pod parts every meshbot Deployment shares. */}}

{{- define "meshbot.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-meshbot, or just <release> when the release name already says meshbot. */}}
{{- define "meshbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meshbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshbot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meshbot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshbot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "serve"). */}}
{{- define "meshbot.componentSelectorLabels" -}}
{{ include "meshbot.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "meshbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "meshbot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "meshbot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The policy text: the values' own, else the packaged copy of policies/default.yaml. */}}
{{- define "meshbot.policy" -}}
{{- .Values.policy | default (.Files.Get "files/default-policy.yaml") -}}
{{- end -}}

{{/* Where the policy ConfigMap is mounted; MESHBOT_POLICY names the file inside it. */}}
{{- define "meshbot.policyDir" -}}/etc/meshbot/policy{{- end -}}
{{- define "meshbot.policyPath" -}}{{ include "meshbot.policyDir" . }}/policy.yaml{{- end -}}

{{/*
Pod-level hardening. uid/gid 10001 is the user the Dockerfile creates; runAsNonRoot makes the
kubelet refuse to start the container if the image is ever changed to run as root.
*/}}
{{- define "meshbot.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container hardening: nothing here is a value, so no values file can weaken it. */}}
{{- define "meshbot.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Environment common to every process, names exactly as meshbot/settings.py reads them. Secrets
are referenced, never copied into the manifest.
*/}}
{{- define "meshbot.env" -}}
- name: SLACK_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.slack.existingSecret }}
      key: {{ .Values.slack.botTokenKey }}
{{- with .Values.slack.apiUrl }}
- name: SLACK_API_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.urlKey }}
{{- else }}
- name: REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
- name: PROMETHEUS_URL
  value: {{ .Values.prometheus.url | quote }}
- name: MESHBOT_POLICY
  value: {{ include "meshbot.policyPath" . }}
- name: MESHBOT_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: MESHBOT_ISTIO_NAMESPACE
  value: {{ .Values.rbac.istioNamespace | quote }}
{{- if .Values.kubeconfig.existingSecret }}
- name: KUBECONFIG
  value: /etc/meshbot/kube/{{ .Values.kubeconfig.key }}
{{- end }}
{{- end -}}

{{/* The policy ConfigMap (read-only) and a writable /tmp (the root filesystem is read-only). */}}
{{- define "meshbot.volumeMounts" -}}
- name: policy
  mountPath: {{ include "meshbot.policyDir" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kubeconfig.existingSecret }}
- name: kubeconfig
  mountPath: /etc/meshbot/kube
  readOnly: true
{{- end }}
{{- end -}}

{{- define "meshbot.volumes" -}}
- name: policy
  configMap:
    name: {{ include "meshbot.fullname" . }}-policy
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kubeconfig.existingSecret }}
- name: kubeconfig
  secret:
    secretName: {{ .Values.kubeconfig.existingSecret }}
    items:
      - key: {{ .Values.kubeconfig.key }}
        path: {{ .Values.kubeconfig.key }}
{{- end }}
{{- end -}}

{{/*
Pod annotations: a checksum of the policy so `helm upgrade` with a new policy rolls the pods,
and, when no ServiceMonitor scrapes them, the conventional prometheus.io hints (with both, every
sample would be scraped twice). Call with (dict "root" $ "port" 9100).
*/}}
{{- define "meshbot.podAnnotations" -}}
checksum/policy: {{ include "meshbot.policy" .root | sha256sum }}
{{- if not .root.Values.serviceMonitor.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* HTTP probes of a process on `port` (a container port name). */}}
{{- define "meshbot.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{/* Scheduling knobs shared by every Deployment. */}}
{{- define "meshbot.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
