"""Composition root: settings, the `interop` command line and the ASGI app assembly."""
