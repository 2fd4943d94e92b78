"""Asyncio MLLP server, durable inbox, acknowledgements and replay of HL7 v2 messages."""
