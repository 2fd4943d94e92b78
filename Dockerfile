# The interop server: FHIR R4 API, SMART, MLLP, the bridges and the worker in one image.
FROM python:3.11.11-slim-bookworm AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INTEROP_HOST=0.0.0.0 \
    INTEROP_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY interop ./interop
COPY fhir_server ./fhir_server
COPY smart_auth ./smart_auth
COPY mappers ./mappers
COPY hl7_listener ./hl7_listener
COPY dicomweb_bridge ./dicomweb_bridge
COPY openemr_bridge ./openemr_bridge
COPY ai_worker ./ai_worker
COPY outbound ./outbound
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home /app interop \
    && mkdir -p /app/var/bulk /app/var/ai-cache && chown -R interop /app/var
# uid 10001: the secrets (deploy/secrets-init.sh, Kubernetes fsGroup) are made for it; the
# named volumes mounted on /app/var/* start with its ownership

USER interop
EXPOSE 8080 2575 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
CMD ["interop", "serve"]
