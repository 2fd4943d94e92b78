"""The OpenEMR accounts the tests register in the simulator (one module, imported by name:
`conftest` is ambiguous when the whole suite runs)."""

CLIENT_ID = "interop-bridge"
CLIENT_SECRET = "s3cret-client-value"
SERVICE_USER = "svc-interop"
SERVICE_PASSWORD = "pa55word-value"


def bridge_settings(openemr_url: str) -> dict[str, str]:
    """The Settings fields that point our app at the simulated OpenEMR with these accounts."""
    return {
        "openemr_url": openemr_url,
        "openemr_client_id": CLIENT_ID,
        "openemr_client_secret": CLIENT_SECRET,
        "openemr_username": SERVICE_USER,
        "openemr_password": SERVICE_PASSWORD,
    }
