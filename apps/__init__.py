"""SMART apps this server hosts itself, with their built assets (package data)."""
