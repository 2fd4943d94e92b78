#!/bin/bash
# Orthanc is healthy when GET /system answers 200 (the image has bash, not curl).
set -eu
auth=$(printf '%s:%s' "${ORTHANC_USER:-interop}" "$(cat "$ORTHANC_PASSWORD_FILE")" | base64 -w0)
exec 3<>"/dev/tcp/127.0.0.1/${ORTHANC_HTTP_PORT:-8042}"
printf 'GET /system HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n' "$auth" >&3
head -n 1 <&3 | grep -q ' 200 '
