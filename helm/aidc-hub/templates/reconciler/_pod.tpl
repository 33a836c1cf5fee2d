{{/* The reconciler's pod: `aidc reconcile` once, with the platform config of the hub ConfigMap. */}}
{{- define "aidc.reconcilerPod" -}}
metadata:
  labels:
    {{- include "aidc.selector" (dict "root" . "component" "reconciler") | nindent 4 }}
spec:
  serviceAccountName: aidc-reconciler
  automountServiceAccountToken: true
  restartPolicy: OnFailure
  {{- include "aidc.podSecurity" 1000 | nindent 2 }}
  {{- with .Values.hub.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.hub.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.hub.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumes:
    - name: config
      configMap: {name: hub}
  containers:
    - name: reconcile
      image: {{ include "aidc.hubImage" . | quote }}
      imagePullPolicy: {{ .Values.hub.image.pullPolicy }}
      command:
        - aidc
        - reconcile
        - --file=/etc/aidc/tenants.yaml
        - --hub-namespace={{ .Release.Namespace }}
        - --hub-service-account=hub
        - --namespace-template={{ .Values.hub.spawner.namespaceTemplate }}
        {{- if .Values.hub.spawner.kueue }}
        - --kueue
        {{- end }}
      {{- include "aidc.containerSecurity" . | nindent 6 }}
      {{- if .Values.catalog }}
      env:
        - {name: AIDC_CATALOG, value: /etc/aidc/catalog.yaml}
      {{- end }}
      volumeMounts:
        - {name: config, mountPath: /etc/aidc, readOnly: true}
      resources:
        {{- toYaml .Values.reconciler.resources | nindent 8 }}
{{- end }}
