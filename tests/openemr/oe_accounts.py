"""The OpenEMR accounts the tests register in the simulator (one module, imported by name:
`conftest` is ambiguous when the whole suite runs)."""

CLIENT_ID = "interop-bridge"
CLIENT_SECRET = "s3cret-client-value"
SERVICE_USER = "svc-interop"
SERVICE_PASSWORD = "pa55word-value"
