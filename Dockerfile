# The interop server: FHIR R4 API (+ later SMART, MLLP, bridges) in one image.
FROM python:3.11-slim AS runtime

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
RUN pip install --no-cache-dir . \
    && useradd --system --home /app interop \
    && mkdir -p /app/var && chown interop /app/var

USER interop
EXPOSE 8080 2575
HEALTHCHECK --interval=15s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz').status != 200)"
CMD ["interop", "serve"]
