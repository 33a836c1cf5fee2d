{{/*
Names are fixed, as in z2jh (hub, proxy-api, proxy-public, ...): one release per namespace.
Cluster-scoped objects carry the namespace in their name so that two releases never collide.
*/}}

{{- define "aidc.labels" -}}
app: aidc-hub
component: {{ .component }}
release: {{ .root.Release.Name }}
app.kubernetes.io/name: aidc-hub
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "aidc.selector" -}}
app: aidc-hub
component: {{ .component }}
release: {{ .root.Release.Name }}
{{- end }}

{{- define "aidc.hubImage" -}}
{{ .Values.hub.image.name }}:{{ .Values.hub.image.tag }}
{{- end }}

{{- define "aidc.reconcilerName" -}}
aidc-reconciler-{{ .Release.Namespace }}
{{- end }}

{{/*
A value of an existing Secret, kept across upgrades (`lookup` sees the live Secret during
install/upgrade; `helm template` sees none and renders a new value):
  include "aidc.keptSecret" (dict "root" $ "secret" "hub" "key" "cookie-secret" "new" $value)
where "new" is used only when the Secret or its key does not exist yet. Output: base64.
*/}}
{{- define "aidc.keptSecret" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- $data := ($live | default dict).data | default dict -}}
{{- if hasKey $data .key -}}
{{ index $data .key }}
{{- else -}}
{{ .new | b64enc }}
{{- end -}}
{{- end }}

{{/* 64 random hex characters (256 bits from crypto/rand through randAlphaNum). */}}
{{- define "aidc.randomHex" -}}
{{ randAlphaNum 64 | sha256sum }}
{{- end }}

{{/* include "aidc.podSecurity" UID: non-root, RuntimeDefault seccomp (Pod Security "restricted"). */}}
{{- define "aidc.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  fsGroup: {{ . }}
  seccompProfile: {type: RuntimeDefault}
{{- end }}

{{- define "aidc.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: [ALL]}
{{- end }}
