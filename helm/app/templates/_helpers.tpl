{{/*
Chart name (the `helm create` helper). Used for release-wide objects only:
per-service objects are named after the service, as docs/CONTRACTS.md says.
*/}}
{{- define "stand.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of release-wide objects (`<release>-devsync`, `<release>-devd`, test pods).
One release per namespace, so the release name alone is unique; truncated so that
the longest suffix still fits in 63 characters.
*/}}
{{- define "stand.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "stand.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: name and instance only, since selectors are immutable.
Call with (dict "root" $ "name" <object name>).
*/}}
{{- define "stand.selectorLabels" -}}
app.kubernetes.io/name: {{ .name | quote }}
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
{{- end -}}

{{/*
Standard labels. Call with (dict "root" $ "name" <name> "component" <component>).
*/}}
{{- define "stand.labels" -}}
helm.sh/chart: {{ include "stand.chart" .root | quote }}
{{ include "stand.selectorLabels" . }}
app.kubernetes.io/component: {{ .component | quote }}
app.kubernetes.io/part-of: {{ .root.Values.partOf | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service | quote }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end -}}

{{/* The database mode of a service: inCluster, external or none (absent block = none). */}}
{{- define "stand.dbMode" -}}
{{- $db := .database | default dict -}}
{{- $db.mode | default "none" -}}
{{- end -}}

{{/*
Persistence of an in-cluster database: on unless `persistence.enabled` is false.
Prints "true" or nothing. Call with the service's values.
*/}}
{{- define "stand.persistent" -}}
{{- $ic := ((.database | default dict).inCluster | default dict) -}}
{{- $p := $ic.persistence | default dict -}}
{{- if or (not (hasKey $p "enabled")) $p.enabled -}}true{{- end -}}
{{- end -}}

{{/* Name of the Secret that holds the devSync token (key `token`). */}}
{{- define "stand.devSyncSecretName" -}}
{{- if .Values.devSync.tokenSecret -}}
{{- .Values.devSync.tokenSecret -}}
{{- else -}}
{{- printf "%s-devsync" (include "stand.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Replicas of a service: an explicit 0 is kept (scaled down), absent = 1. */}}
{{- define "stand.replicas" -}}
{{- if hasKey . "replicas" -}}{{ .replicas | int }}{{- else -}}1{{- end -}}
{{- end -}}

{{/*
The ConfigMap data of one service (non-secret settings). Also hashed into the pod
template so that a changed setting rolls the pods.
Call with (dict "root" $ "name" <svc> "svc" <service values>).
*/}}
{{- define "stand.configData" -}}
{{- $svc := .svc -}}
{{- $mode := include "stand.dbMode" $svc -}}
{{- $db := $svc.database | default dict -}}
{{- $data := dict "PORT" (toString $svc.port) "RUST_LOG" "info" "LOG_FORMAT" "json" -}}
{{- if eq $mode "inCluster" -}}
{{- $_ := set $data "DB_HOST" (printf "postgres-%s" .name) -}}
{{- $_ := set $data "DB_PORT" "5432" -}}
{{- $_ := set $data "DB_SSLMODE" "disable" -}}
{{- else if eq $mode "external" -}}
{{- $ext := $db.external | default dict -}}
{{- $_ := set $data "DB_HOST" (toString $ext.host) -}}
{{- $_ := set $data "DB_PORT" (toString ($ext.port | default 5432)) -}}
{{- $_ := set $data "DB_SSLMODE" ($ext.sslmode | default "prefer") -}}
{{- end -}}
{{- if ne $mode "none" -}}
{{- $_ := set $data "DB_NAME" ($db.name | default .name) -}}
{{- $_ := set $data "DB_USER" ($db.user | default .name) -}}
{{- end -}}
{{- range $k, $v := ($svc.env | default dict) -}}
{{- $_ := set $data $k (toString $v) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/*
A memory quantity as the schema allows it (<n>Ki, <n>Mi, <n>Gi) in KiB.
*/}}
{{- define "stand.kibibytes" -}}
{{- $q := toString . -}}
{{- if hasSuffix "Gi" $q -}}{{ mul (trimSuffix "Gi" $q | int64) 1048576 }}
{{- else if hasSuffix "Mi" $q -}}{{ mul (trimSuffix "Mi" $q | int64) 1024 }}
{{- else -}}{{ trimSuffix "Ki" $q | int64 }}
{{- end -}}
{{- end -}}

{{/*
A CPU quantity as the schema allows it (<n>m, or cores such as 1 or 0.5) in millicores.
*/}}
{{- define "stand.millicores" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}{{ trimSuffix "m" $q | int64 }}
{{- else -}}{{ round (mulf (float64 $q) 1000) 0 | int64 }}
{{- end -}}
{{- end -}}

{{/*
Cross-field rules that values.schema.json cannot express. Each message names the
key and spells out the fix; all problems are reported at once.
*/}}
{{- define "stand.validateValues" -}}
{{- $errors := list -}}
{{- $reserved := list "PORT" "DATABASE_URL" "DB_HOST" "DB_PORT" "DB_NAME" "DB_USER" "DB_PASSWORD" "DB_SSLMODE" "STAND_SHIM_TOKEN" "STAND_SHIM_PORT" -}}
{{- $enabled := 0 -}}
{{- range $name, $svc := .Values.services -}}
{{- if $svc.enabled -}}
{{- $enabled = add1 $enabled -}}
{{- $key := printf "services.%s" $name -}}
{{- $mode := include "stand.dbMode" $svc -}}
{{- $db := $svc.database | default dict -}}
{{- if eq $mode "external" -}}
{{- $ext := $db.external | default dict -}}
{{- if not $ext.host -}}
{{- $errors = append $errors (printf "%s.database.external.host is empty but %s.database.mode is external: set it to the database server's host name (--set %s.database.external.host=db.example.com), or choose mode inCluster or none" $key $key $key) -}}
{{- end -}}
{{- $sec := $ext.existingSecret | default dict -}}
{{- if not $sec.name -}}
{{- $errors = append $errors (printf "%s.database.external.existingSecret.name is empty but %s.database.mode is external: create the password Secret (kubectl create secret generic %s-db --from-literal=password=...) and set %s.database.external.existingSecret.name=%s-db" $key $key $name $key $name) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $mode "inCluster") (gt (len $name) 43) -}}
{{- $errors = append $errors (printf "%s: the service name is %d characters long but with database.mode inCluster its StatefulSet postgres-%s must stay within 52: shorten the name to at most 43 characters" $key (len $name) $name) -}}
{{- end -}}
{{- range $k, $v := ($svc.env | default dict) -}}
{{- if has $k $reserved -}}
{{- $errors = append $errors (printf "%s.env.%s is set by the chart itself (from port, database and devSync): remove it from %s.env and use the dedicated value instead" $key $k $key) -}}
{{- end -}}
{{- end -}}
{{- $res := $svc.resources | default dict -}}
{{- $req := $res.requests | default dict -}}
{{- $lim := $res.limits | default dict -}}
{{- if and $req.memory $lim.memory (gt (include "stand.kibibytes" $req.memory | int64) (include "stand.kibibytes" $lim.memory | int64)) -}}
{{- $errors = append $errors (printf "%s.resources.requests.memory (%s) is above %s.resources.limits.memory (%s): the API server refuses a request above its limit; lower the request or raise the limit" $key (toString $req.memory) $key (toString $lim.memory)) -}}
{{- end -}}
{{- if and $req.cpu $lim.cpu (gt (include "stand.millicores" $req.cpu | int64) (include "stand.millicores" $lim.cpu | int64)) -}}
{{- $errors = append $errors (printf "%s.resources.requests.cpu (%s) is above %s.resources.limits.cpu (%s): the API server refuses a request above its limit; lower the request or raise the limit" $key (toString $req.cpu) $key (toString $lim.cpu)) -}}
{{- end -}}
{{- if and $.Values.devSync.enabled (eq (int $svc.port) (int $.Values.devSync.port)) -}}
{{- $errors = append $errors (printf "%s.port is %d, the same as devSync.port: the shim and the service need distinct ports, change one of them" $key (int $svc.port)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $enabled 0 -}}
{{- $errors = append $errors "services: no service is enabled, so nothing would be deployed: set services.<name>.enabled=true for at least one service" -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\ninvalid values:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
