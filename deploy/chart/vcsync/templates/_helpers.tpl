{{/* Name of the cluster's objects: vcsync-<release>. */}}
{{- define "vcsync.base" -}}vcsync-{{ .Release.Name }}{{- end -}}

{{/* The host namespace. */}}
{{- define "vcsync.namespace" -}}{{ .Values.namespace | default .Release.Namespace }}{{- end -}}

{{/* Labels of every object (the vcsync cluster driver's, managed-by Helm here). */}}
{{- define "vcsync.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/name: vcsync
vcsync.dev/cluster: {{ .Release.Name }}
{{- end -}}

{{- define "vcsync.selectorLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/name: vcsync
{{- end -}}

{{/* Labels of the datastore claims (the driver's too: `vcsync cluster delete` finds them). */}}
{{- define "vcsync.claimLabels" -}}
{{ include "vcsync.selectorLabels" . }}
vcsync.dev/cluster: {{ .Release.Name }}
{{- end -}}

{{/* The service CIDR is detected (no controlPlane.serviceCidr): "true" or "false". */}}
{{- define "vcsync.detectsServiceCidr" -}}
{{- empty ((.Values.controlPlane | default dict).serviceCidr) -}}
{{- end -}}

{{/* persistence.enabled, default true. */}}
{{- define "vcsync.persistent" -}}
{{- dig "enabled" true (.Values.persistence | default dict) -}}
{{- end -}}

{{/* config.sync.<kind>.enabled with vcsync's default. */}}
{{- define "vcsync.enabled" -}}
{{- $sync := (.root.Values.config | default dict).sync | default dict -}}
{{- dig .kind "enabled" .default $sync -}}
{{- end -}}

{{/* Whether vcsync serves the kubelet API of the virtual nodes: unless the config has a kubelet
section without `listen` (the driver's kubelet_api_on). */}}
{{- define "vcsync.kubelet" -}}
{{- $config := .Values.config | default dict -}}
{{- or (not (hasKey $config "kubelet")) (hasKey ($config.kubelet | default dict) "listen") -}}
{{- end -}}

{{- define "vcsync.perNamespace" -}}
{{- eq ((.Values.config | default dict).namespaceMapping | default "single") "perNamespace" -}}
{{- end -}}

{{/*
The host resources the enabled syncers use, as "namespaced|group|resource|access" lines; the
same derivation as `vcsync rbac` (syncer/src/rbac.rs), which a test compares with this chart.
*/}}
{{- define "vcsync.uses" -}}
true||pods|write
true||secrets|write
true||events|report
{{ include "vcsync.enabled" (dict "root" . "kind" "configMaps" "default" true) }}||configmaps|write
{{ eq (include "vcsync.enabled" (dict "root" . "kind" "configMaps" "default" true)) "false" }}||configmaps|record
{{ include "vcsync.enabled" (dict "root" . "kind" "services" "default" true) }}||services|write
{{ include "vcsync.enabled" (dict "root" . "kind" "services" "default" true) }}||endpoints|write
{{ include "vcsync.enabled" (dict "root" . "kind" "services" "default" true) }}|discovery.k8s.io|endpointslices|read
{{ include "vcsync.enabled" (dict "root" . "kind" "persistentVolumeClaims" "default" true) }}||persistentvolumeclaims|write
{{ include "vcsync.enabled" (dict "root" . "kind" "serviceAccounts" "default" false) }}||serviceaccounts|write
{{ include "vcsync.enabled" (dict "root" . "kind" "ingresses" "default" false) }}|networking.k8s.io|ingresses|write
{{ include "vcsync.enabled" (dict "root" . "kind" "networkPolicies" "default" false) }}|networking.k8s.io|networkpolicies|write
{{ include "vcsync.enabled" (dict "root" . "kind" "podDisruptionBudgets" "default" false) }}|policy|poddisruptionbudgets|write
{{ include "vcsync.enabled" (dict "root" . "kind" "events" "default" true) }}||events|read
{{ include "vcsync.kubelet" . }}||pods/log|log
{{ include "vcsync.kubelet" . }}||pods/exec|stream
{{ include "vcsync.kubelet" . }}||pods/attach|stream
{{ include "vcsync.kubelet" . }}||pods/portforward|stream
{{ include "vcsync.kubelet" . }}|metrics.k8s.io|pods|metrics
{{- end -}}

{{- define "vcsync.clusterUses" -}}
{{ include "vcsync.enabled" (dict "root" . "kind" "priorityClasses" "default" false) }}|scheduling.k8s.io|priorityclasses|write
{{ include "vcsync.enabled" (dict "root" . "kind" "storageClasses" "default" true) }}|storage.k8s.io|storageclasses|read
{{ include "vcsync.enabled" (dict "root" . "kind" "ingressClasses" "default" true) }}|networking.k8s.io|ingressclasses|read
true||nodes|read
{{ include "vcsync.perNamespace" . }}||namespaces|write
{{- end -}}

{{/* Rules for "enabled|group|resource|access" lines: one rule per resource. Access: read, write,
record (the identity record ConfigMap), report (host Events of the host guard), log (a pod's
log), stream (a pod's exec, attach and portforward), metrics (PodMetrics). */}}
{{- define "vcsync.rules" -}}
{{- range splitList "\n" . }}
{{- $f := splitList "|" . }}
{{- if eq (index $f 0) "true" }}
- apiGroups: [{{ index $f 1 | quote }}]
  resources: [{{ index $f 2 }}]
  verbs: {{ if eq (index $f 3) "read" }}[get, list, watch]{{ else if eq (index $f 3) "record" }}[get, create, update]{{ else if eq (index $f 3) "report" }}[create]{{ else if eq (index $f 3) "log" }}[get]{{ else if eq (index $f 3) "stream" }}[get, create]{{ else if eq (index $f 3) "metrics" }}[get, list]{{ else }}[get, list, watch, create, update, delete]{{ end }}
{{- end }}
{{- end }}
{{- end -}}


{{/* A level of podSecurity: .mode of .ps, default .default; fails on an unknown level. */}}
{{- define "vcsync.podSecurityLevel" -}}
{{- $level := dig .mode .default .ps | toString -}}
{{- if not (has $level (list "" "privileged" "baseline" "restricted")) -}}
{{- fail (printf "values: podSecurity.%s: %q is not a Pod Security level (privileged, baseline, restricted, or \"\" for no label)" .mode $level) -}}
{{- end -}}
{{- $level -}}
{{- end -}}

{{/* The level the host namespace enforces (podSecurity.enforce, default baseline), "" none. */}}
{{- define "vcsync.enforcedPodSecurity" -}}
{{- $level := include "vcsync.podSecurityLevel" (dict "ps" (.Values.podSecurity | default dict) "mode" "enforce" "default" "baseline") -}}
{{- if eq $level "restricted" -}}
{{- fail "values: podSecurity.enforce: restricted would refuse the control plane's own pod (k3s runs as root); enforce baseline on the host and set config.sync.pods.podSecurityStandard: restricted to hold the tenant's pods to restricted" -}}
{{- end -}}
{{- $level -}}
{{- end -}}

{{/* The Pod Security Admission labels of the host namespace (the driver's pod_security_labels). */}}
{{- define "vcsync.podSecurityLabels" -}}
{{- $ps := .Values.podSecurity | default dict }}
{{- $version := dig "version" "latest" $ps | toString }}
{{- if not (regexMatch "^(latest|v1\\.[0-9]+)$" $version) }}
{{- fail (printf "values: podSecurity.version: %q is not a version of the Pod Security Standards (latest or v1.N)" $version) }}
{{- end }}
{{- $levels := dict "enforce" (include "vcsync.enforcedPodSecurity" .) }}
{{- range $mode := list "warn" "audit" }}
{{- $_ := set $levels $mode (include "vcsync.podSecurityLevel" (dict "ps" $ps "mode" $mode "default" "")) }}
{{- end }}
{{- range $mode := list "enforce" "warn" "audit" }}
{{- with get $levels $mode }}
pod-security.kubernetes.io/{{ $mode }}: {{ . }}
pod-security.kubernetes.io/{{ $mode }}-version: {{ $version | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The names the serving certificate holds besides the Service's own (a YAML list):
controlPlane.extraSans, then the Ingress's host; each a DNS name or an IP address. */}}
{{- define "vcsync.certificateNames" -}}
{{- $names := .Values.controlPlane.extraSans | default list }}
{{- $ingress := .Values.controlPlane.ingress | default dict }}
{{- if $ingress.enabled }}
{{- if not $ingress.host }}{{ fail "controlPlane.ingress.enabled needs controlPlane.ingress.host" }}{{ end }}
{{- if not (has $ingress.host $names) }}{{ $names = append $names $ingress.host }}{{ end }}
{{- end }}
{{- range $names }}
{{- if not (regexMatch "^[A-Za-z0-9.:*-]+$" .) }}{{ fail (printf "controlPlane.extraSans: %q is not a DNS name or an IP address" .) }}{{ end }}
{{- end }}
{{- toYaml $names }}
{{- end -}}
