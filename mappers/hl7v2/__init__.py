"""HL7 v2 messages -> FHIR transaction Bundles (pure: no network, no database)."""

from mappers.hl7v2.mapping import to_bundle
from mappers.hl7v2.parser import Message, ParseError, parse

__all__ = ["Message", "ParseError", "parse", "to_bundle"]
