"""FHIR R4 REST routers: metadata, instance/type/system interactions, bundles, operations."""
