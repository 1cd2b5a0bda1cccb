{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name when it already contains the chart name.
*/}}
{{- define "kubetune.fullname" -}}
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

{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end }}

{{/*
Selector labels. The operator's pods add app.kubernetes.io/component: operator.
*/}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubetune.operatorSelectorLabels" -}}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubetune.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else -}}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}
{{- end }}

{{/*
The metrics Service's name; also the `job` label Prometheus gives the operator's series
when it scrapes through the ServiceMonitor.
*/}}
{{- define "kubetune.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kubetune.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The operator's least privileges: exactly what it calls, one rule per resource so each can
be reviewed (and removed in tests) on its own. It lists and watches, writes job and trial
status through the status subresource, creates trials and their pods, GETs a pod the watch
has not shown yet, deletes pods of stopped trials, records Events and holds each job's
Lease. Each kind of workloadKinds gets the verbs pods get (a trial's attempt is one of
them); their pods are trial pods, covered by the pods rule. Standalone (one replica, no
peering objects), so nothing else. Keep in sync with helm/kubetune/README.md and the test
tests/unit/helm_chart.py::OPERATOR_RULES.
*/}}
{{- define "kubetune.rbacRules" -}}
- apiGroups: ["kubetune.io"]
  resources: ["tuningjobs"]
  verbs: ["list", "watch"]
- apiGroups: ["kubetune.io"]
  resources: ["tuningjobs/status"]
  verbs: ["patch"]
- apiGroups: ["kubetune.io"]
  resources: ["trials"]
  verbs: ["list", "watch", "create"]
- apiGroups: ["kubetune.io"]
  resources: ["trials/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- range .Values.workloadKinds }}
- apiGroups: [{{ .group | quote }}]
  resources: [{{ .resource | quote }}]
  verbs: ["get", "list", "watch", "create", "delete"]
{{- end }}
{{- end }}

{{/*
KUBETUNE_WORKLOAD_KINDS: the kinds of workloadKinds as the operator reads them, group/version/resource
joined by commas (empty: none).
*/}}
{{- define "kubetune.workloadKinds" -}}
{{- $kinds := list }}
{{- range .Values.workloadKinds }}
{{- $kinds = append $kinds (printf "%s/%s/%s" .group .version .resource) }}
{{- end }}
{{- join "," $kinds }}
{{- end }}

{{/*
Checks of value combinations the schema cannot express; fails the render with a message.
*/}}
{{- define "kubetune.validate" -}}
{{- $m := .Values.metrics }}
{{- if and $m.serviceMonitor.enabled (not $m.enabled) }}
{{- fail "metrics.serviceMonitor.enabled=true needs metrics.enabled=true (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- if and $m.prometheusRule.enabled (not $m.serviceMonitor.enabled) }}
{{- fail "metrics.prometheusRule.enabled=true needs metrics.serviceMonitor.enabled=true (the alerts read the operator's metrics)" }}
{{- end }}
{{- if and .Values.dashboard.enabled (not $m.enabled) }}
{{- fail "dashboard.enabled=true needs metrics.enabled=true (the dashboard reads the operator's metrics)" }}
{{- end }}
{{- if eq (int $m.port) (int .Values.operator.healthPort) }}
{{- fail "metrics.port and operator.healthPort must differ" }}
{{- end }}
{{- end }}
