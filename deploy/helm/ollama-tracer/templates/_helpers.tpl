{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "ollama-tracer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name unless it already contains it. */}}
{{- define "ollama-tracer.fullname" -}}
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

{{- define "ollama-tracer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ollama-tracer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ollama-tracer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ollama-tracer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ollama-tracer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ollama-tracer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ollama-tracer.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Spans on stdout: none when exporting over OTLP, text otherwise, unless set. */}}
{{- define "ollama-tracer.output" -}}
{{- if .Values.output }}
{{- .Values.output }}
{{- else if .Values.otlp.endpoint }}
{{- "none" }}
{{- else }}
{{- "text" }}
{{- end }}
{{- end }}

{{/*
Capabilities the capture mode needs, as a YAML list (docs/deploy.md, "Privileges"):
  BPF        create maps, load programs (bpf()).
  PERFMON    the verifier's full analysis: without it the programs are refused
             ("sequence of jumps too complex": Spectre v1 sanitising).
  NET_ADMIN  attach cgroup_skb (and TCX) programs.
  NET_RAW    libpcap's AF_PACKET socket (modes auto and pcap only).
*/}}
{{- define "ollama-tracer.capabilities" -}}
{{- $caps := list }}
{{- if ne .Values.capture.mode "pcap" }}
{{- $caps = concat $caps (list "BPF" "PERFMON" "NET_ADMIN") }}
{{- end }}
{{- if ne .Values.capture.mode "ebpf" }}
{{- $caps = append $caps "NET_RAW" }}
{{- end }}
{{- $caps = concat $caps .Values.securityContext.extraCapabilities | uniq }}
{{- toYaml $caps }}
{{- end }}

{{/* OTEL_RESOURCE_ATTRIBUTES: the node's name as host.name (a pod's hostname is the pod name). */}}
{{- define "ollama-tracer.resourceAttributes" -}}
{{- $attrs := list "host.name=$(K8S_NODE_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" }}
{{- range $k, $v := .Values.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
