#!/bin/sh
# Makes the stack's secrets once, in the `secrets` volume (run by the `secrets` service of
# docker-compose.yml before anything else). Files already there are kept: to use your own,
# write them into the volume first. Every service reads only the files it needs (`_FILE`).
set -eu
cd "${SECRETS_DIR:-/run/secrets/interop}"
random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
for name in postgres_password redis_password orthanc_password orthanc_callback_token metrics_token; do
  [ -s "$name" ] || { random > "$name"; echo "made $name"; }
done
# INTEROP_SECRET_KEY_FILE: seals the signing keys; 32 random bytes in base64. BACK IT UP.
[ -s secret_key ] || { head -c 32 /dev/urandom | base64 > secret_key; echo "made secret_key"; }
printf 'postgresql+psycopg://interop:%s@postgres:5432/interop' "$(cat postgres_password)" > database_url
printf 'redis://:%s@redis:6379/0' "$(cat redis_password)" > redis_url
# owners: postgres (999) reads its password; the interop image runs as 10001; Orthanc and the
# Redis entrypoint read theirs as root before dropping privileges
chown 999 postgres_password
chown 10001 database_url redis_url orthanc_password orthanc_callback_token metrics_token secret_key
chmod 0400 ./*
