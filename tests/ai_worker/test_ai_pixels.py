"""Pixels: every supported transfer syntax round-trips through Orthanc and decodes exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, generate_uid

from ai_worker.errors import BadInput, MissingDecoder, TransientError
from ai_worker.phantom import SYNTAXES, make_phantom, write_series
from ai_worker.pixels import VolumeBuilder, decode_frames
from ai_worker.pixels.fetch import DicomWebSource


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_decode_and_sort_every_syntax(syntax: str, ojph: None) -> None:
    phantom = make_phantom(slices=6, size=32)
    datasets = write_series(phantom, syntax)
    random.Random(7).shuffle(datasets)  # the PACS streams in any order
    builder = VolumeBuilder()
    for ds in datasets:
        builder.add(ds)
    volume = builder.largest({"CT"})
    assert volume.voxels.dtype == np.int16  # CT: integral rescale, kept in 2 bytes
    assert np.array_equal(volume.voxels, phantom.hu)  # rescaled to HU and sorted along z
    assert volume.spacing == (2.5, 0.8, 0.8)
    assert volume.transfer_syntaxes == {str(SYNTAXES[syntax])}


def test_sorting_follows_the_slice_normal_not_instance_numbers() -> None:
    phantom = make_phantom(slices=5, size=16)
    datasets = write_series(phantom)
    for ds in datasets:  # flip the patient: normal (0, 0, -1), positions descending
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
        ds.InstanceNumber = 99 - ds.InstanceNumber
    builder = VolumeBuilder()
    for ds in datasets:
        builder.add(ds)
    volume = builder.largest()
    assert volume.normal == (0.0, 0.0, -1.0)
    # projection on a (0,0,-1) normal: highest z first
    assert np.array_equal(volume.voxels, phantom.hu[::-1])
    assert volume.spacing[0] == 2.5


def test_fractional_rescale_gives_float32() -> None:
    phantom = make_phantom(slices=3, size=16)
    datasets = write_series(phantom)
    for ds in datasets:
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -1024
    builder = VolumeBuilder()
    for ds in datasets:
        builder.add(ds)
    volume = builder.largest()
    assert volume.voxels.dtype == np.float32
    expected = (phantom.hu.astype(np.float32) + 1024) * 0.5 - 1024
    assert np.allclose(volume.voxels, expected)


def test_missing_plugin_names_the_package() -> None:
    ds = write_series(make_phantom(slices=1, size=16))[0]
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    with pytest.raises(MissingDecoder, match="pylibjpeg-libjpeg"):
        decode_frames(ds)


def test_jpeg_baseline_error_or_decoder() -> None:
    """JPEG baseline needs a decoder plugin: either one is installed, or the error says which."""
    ds = write_series(make_phantom(slices=1, size=16))[0]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(BadInput):  # garbage for a JPEG decoder, or a missing-plugin error
        decode_frames(ds)


def test_no_pixel_data_is_bad_input() -> None:
    ds = write_series(make_phantom(slices=1, size=16))[0]
    del ds.PixelData
    with pytest.raises(BadInput, match="no pixel data"):
        decode_frames(ds)


@pytest.mark.parametrize("syntax", ["uncompressed", "rle", "jpeg2000", "htj2k"])
def test_wado_rs_returns_the_original_syntax(orthanc, ojph, syntax: str) -> None:  # type: ignore[no-untyped-def]
    phantom = make_phantom(slices=4, size=32)
    study = generate_uid()
    orthanc.stow(write_series(phantom, syntax, study_uid=study))
    source = DicomWebSource(orthanc.dicomweb, orthanc.user, orthanc.password)
    series = source.series(study)
    assert [m for _, m in series] == ["CT"]
    builder = VolumeBuilder()
    for ds in source.instances(study, series[0][0]):
        builder.add(ds)
    volume = builder.largest({"CT"})
    assert volume.transfer_syntaxes == {str(SYNTAXES[syntax])}  # not transcoded
    assert np.array_equal(volume.voxels, phantom.hu)


def test_unknown_study_is_bad_input_and_dead_pacs_is_transient(orthanc) -> None:  # type: ignore[no-untyped-def]
    source = DicomWebSource(orthanc.dicomweb, orthanc.user, orthanc.password)
    with pytest.raises(BadInput):
        source.series(generate_uid())
    dead = DicomWebSource("http://127.0.0.1:9/dicom-web", timeout=2)
    with pytest.raises(TransientError):
        dead.series(generate_uid())
