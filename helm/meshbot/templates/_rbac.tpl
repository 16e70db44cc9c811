{{/*
The permissions of jobs/domain/rbac.py's table, merged per scope (jobs.domain.rbac.rules_by_scope()).
Values never change these rules, only where they apply; tests/integration/test_helm_chart.py
renders the chart and fails if they differ from the table by a single verb. Edit the table
first, then these lines.
*/}}

{{/* Role in each namespace of rbac.namespaces. */}}
{{- define "meshbot.rbac.namespacedRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, create, patch, delete]
- apiGroups: [networking.istio.io]
  resources: [destinationrules]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [networking.istio.io]
  resources: [gateways]
  verbs: [get, list]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list]
- apiGroups: [security.istio.io]
  resources: [authorizationpolicies]
  verbs: [get, list, create, patch, delete]
- apiGroups: [security.istio.io]
  resources: [peerauthentications]
  verbs: [get, list, create, update, patch]
- apiGroups: [telemetry.istio.io]
  resources: [telemetries]
  verbs: [get, list, create, patch]
{{- end -}}

{{/* Read-only Role in rbac.istioNamespace (readiness). */}}
{{- define "meshbot.rbac.istioSystemRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list]
{{- end -}}

{{/*
ClusterRole: cluster-scoped resources only. Namespaces are narrowed by resourceNames to the
managed ones (jobs.domain.rbac.NAMED_BY_MANAGED_NAMESPACES), so meshbot cannot relabel any other
namespace; Nodes are read for their zone labels.
*/}}
{{- define "meshbot.rbac.clusterRules" -}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, patch]
  resourceNames:
    {{- toYaml (uniq .Values.rbac.namespaces) | nindent 4 }}
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list]
{{- end -}}
