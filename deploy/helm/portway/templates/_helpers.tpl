{{/*
Helpers of the Portway chart. Names are fixed (portway-controller, portway-speaker,
portway-config): one Portway per cluster, and the docs, the Lease and the kustomize
overlays use the same names.
*/}}

{{/* Labels on every object. */}}
{{- define "portway.labels" -}}
app.kubernetes.io/name: portway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector labels of one component (the same as the kustomize manifests'). */}}
{{- define "portway.selector" -}}
app.kubernetes.io/name: portway
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The container image. */}}
{{- define "portway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The flavour, checked (the schema refuses others too; this names the fix). */}}
{{- define "portway.cluster" -}}
{{- $c := .Values.cluster -}}
{{- if not (has $c (list "kubeadm" "k3s" "k3s-full")) -}}
{{- fail (printf "cluster: %q is not a cluster flavour; use kubeadm, k3s or k3s-full" $c) -}}
{{- end -}}
{{ $c }}
{{- end }}

{{/* Whether the cloud-node controller runs: not on k3s, whose own CCM initializes nodes. */}}
{{- define "portway.cloudNode" -}}
{{- if ne (include "portway.cluster" .) "k3s" }}true{{ end -}}
{{- end }}

{{/* Whether the hostport class is on (it is unless `enabled: false`). */}}
{{- define "portway.hostportEnabled" -}}
{{- $hp := .Values.config.hostport | default dict -}}
{{- if or (not (hasKey $hp "enabled")) $hp.enabled }}true{{ end -}}
{{- end }}

{{/*
The namespace of the svclb DaemonSets: the configured one, else the release's, for
every flavour (kube-system's ServiceAccounts are powerful; SECURITY.md).
*/}}
{{- define "portway.hostportNamespace" -}}
{{- $hp := .Values.config.hostport | default dict -}}
{{- if $hp.namespace -}}
{{ $hp.namespace }}
{{- else -}}
{{ .Release.Namespace }}
{{- end -}}
{{- end }}

{{/* The svclb image (hostport.image, else the provider's default), for the admission policy. */}}
{{- define "portway.hostportImage" -}}
{{- $hp := .Values.config.hostport | default dict -}}
{{- $image := $hp.image | default "rancher/klipper-lb:v0.4.17" -}}
{{- if or (contains "'" $image) (contains "\\" $image) -}}
{{- fail (printf "config.hostport.image: %q holds a quote or backslash; give an image reference such as rancher/klipper-lb:v0.4.17" $image) -}}
{{- end -}}
{{ $image }}
{{- end }}

{{/* The user name of one of Portway's ServiceAccounts, for the admission policies. */}}
{{- define "portway.saUser" -}}
system:serviceaccount:{{ .root.Release.Namespace }}:{{ .sa }}
{{- end }}

{{/*
The configuration file: `config` with hostport.namespace filled in, so the file and
the hostport Role always name the same namespace.
*/}}
{{- define "portway.configFile" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $hp := deepCopy ($config.hostport | default dict) -}}
{{- $_ := set $hp "namespace" (include "portway.hostportNamespace" .) -}}
{{- $_ := set $config "hostport" $hp -}}
{{ toYaml $config }}
{{- end }}

{{/* Whether the speaker runs: a node agent only serves l2 and bgp. */}}
{{- define "portway.speakerEnabled" -}}
{{- if or .Values.config.l2 .Values.config.bgp }}true{{ end -}}
{{- end }}

{{/*
Secrets the controller reads, as "namespace/name" lines: f5.credentialsSecret, or
the name the docs give (portway-system/bigip in the release namespace) when f5 is
not configured, so that adding the f5 section needs no RBAC change.
*/}}
{{- define "portway.controllerSecrets" -}}
{{- $f5 := .Values.config.f5 | default dict -}}
{{- $ref := $f5.credentialsSecret | default dict -}}
{{ $ref.namespace | default .Release.Namespace }}/{{ $ref.name | default "bigip" }}
{{- end }}

{{/*
Secrets the speaker reads: every bgp.peers[].passwordSecret, or bgp-auth in the
release namespace when none is named.
*/}}
{{- define "portway.speakerSecrets" -}}
{{- $bgp := .Values.config.bgp | default dict -}}
{{- $out := list -}}
{{- range $bgp.peers | default list -}}
{{- with .passwordSecret -}}
{{- $out = append $out (printf "%s/%s" .namespace .name) -}}
{{- end -}}
{{- end -}}
{{- if not $out -}}
{{- $out = list (printf "%s/bgp-auth" $.Release.Namespace) -}}
{{- end -}}
{{- $out = append $out (printf "%s/portway-gossip" $.Release.Namespace) -}}
{{ $out | uniq | sortAlpha | join "\n" }}
{{- end }}

{{/*
A Role granting `get` on named Secrets, and its binding, per namespace.
Arguments: root, sa, component, role (name prefix), secrets ("ns/name" lines).
*/}}
{{- define "portway.secretRoles" -}}
{{- $root := .root -}}
{{- $byNs := dict -}}
{{- range splitList "\n" .secrets -}}
{{- $parts := splitList "/" . -}}
{{- $ns := index $parts 0 -}}
{{- $_ := set $byNs $ns (append (get $byNs $ns | default list) (index $parts 1)) -}}
{{- end -}}
{{- range $ns := keys $byNs | sortAlpha }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $.role }}
  namespace: {{ $ns }}
  labels:
    {{- include "portway.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $.component }}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: {{ get $byNs $ns | uniq | sortAlpha | toJson }}
    verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $.role }}
  namespace: {{ $ns }}
  labels:
    {{- include "portway.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $.component }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $.role }}
subjects:
  - kind: ServiceAccount
    name: {{ $.sa }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
