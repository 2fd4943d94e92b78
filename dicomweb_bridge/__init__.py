"""Orthanc change-feed follower, DICOMweb client, uploads and the secured DICOMweb proxy."""
