{{/* The chart's name. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>`, or the release name when it already contains the chart's name. */}}
{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The injector's Service (and Deployment) name; the webhook calls <it>.<namespace>.svc. */}}
{{- define "berth.injector" -}}
{{- printf "%s-injector" (include "berth.fullname" .) -}}
{{- end -}}

{{- define "berth.admin" -}}
{{- printf "%s-admin" (include "berth.fullname" .) -}}
{{- end -}}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (`injector` or `admin`): pass (list $ "injector"). */}}
{{- define "berth.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "berth.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "berth.sidecarImage" -}}
{{- $repo := default .Values.image.repository .Values.sidecar.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.sidecar.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Namespaces never injected: kube-system, the release's own, and the configured ones. */}}
{{- define "berth.excludedNamespaces" -}}
{{- toJson (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq) -}}
{{- end -}}

{{/* The hardened container security context both programs run with. */}}
{{- define "berth.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The webhook's TLS Secret name. */}}
{{- define "berth.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- required "tls.secret.name is required when tls.mode is secret" .Values.tls.secret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "berth.injector" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the admin API reads BERTH_REGISTRY from, as JSON {name, key}; name empty for a
literal registry. admin.registrySecret, else (unless admin.registry is set) the sidecars'. */}}
{{- define "berth.adminRegistrySecret" -}}
{{- $a := .Values.admin.registrySecret -}}
{{- $s := .Values.sidecar.registrySecret -}}
{{- if $a.name -}}
{{- toJson (dict "name" $a.name "key" (default $s.key $a.key)) -}}
{{- else if and $s.name (not .Values.admin.registry) -}}
{{- toJson (dict "name" $s.name "key" $s.key) -}}
{{- else -}}
{{- toJson (dict "name" "" "key" "") -}}
{{- end -}}
{{- end -}}
