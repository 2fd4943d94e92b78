#!/bin/sh
# Orthanc with the interop configuration: the shipped orthanc.json plus the credentials,
# written at start from the secret file so the password is in no image and no environment.
set -eu
conf=/tmp/orthanc-config
mkdir -p "$conf"
cp /etc/orthanc-interop/orthanc.json "$conf/orthanc.json"
umask 077
printf '{"RegisteredUsers": {"%s": "%s"}}\n' "${ORTHANC_USER:-interop}" \
  "$(cat "$ORTHANC_PASSWORD_FILE")" > "$conf/credentials.json"
exec Orthanc "$conf"
