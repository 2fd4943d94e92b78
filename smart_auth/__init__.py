"""OAuth2 / OpenID Connect authorization server and the access policy the FHIR API enforces."""
