"""OpenEMR OAuth2 client, patient sync and creation, and the EHR-launch bridge."""
