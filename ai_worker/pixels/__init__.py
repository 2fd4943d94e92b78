"""Pixels: fetch a study's instances over WADO-RS, decode them, build volumes."""

from ai_worker.pixels.decode import decode_frames, supported_syntaxes
from ai_worker.pixels.volume import Volume, VolumeBuilder

__all__ = ["Volume", "VolumeBuilder", "decode_frames", "supported_syntaxes"]
