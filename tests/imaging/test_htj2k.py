"""HTJ2K: Orthanc 1.10 cannot transcode it, so it must pass through upload and proxy unchanged."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pydicom
import pytest
from ci_support import IN_CI
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from dicomweb_bridge.samples import StudySpec, instance, to_bytes

HTJ2K_LOSSLESS = UID("1.2.840.10008.1.2.4.201")
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def htj2k_instance(tmp_path) -> tuple[pydicom.Dataset, bytes]:
    if shutil.which("ojph_compress") is None:
        if IN_CI:
            pytest.fail("ojph_compress (openjph-tools) is required in CI")
        pytest.skip("ojph_compress (openjph-tools) is not installed")
    size = 16
    pixels = b"".join(struct.pack(">H", (i * 37) % 4096) for i in range(size * size))
    (tmp_path / "in.pgm").write_bytes(b"P5\n16 16\n4095\n" + pixels)
    subprocess.run(["ojph_compress", "-i", str(tmp_path / "in.pgm"), "-o",
                    str(tmp_path / "out.j2c"), "-reversible", "true"],
                   check=True, capture_output=True)  # fmt: skip
    codestream = (tmp_path / "out.j2c").read_bytes()
    ds = instance(StudySpec(patient_id="HT-1", size=size), pydicom.uid.generate_uid(),
                  pydicom.uid.generate_uid(), 1, "CT", 1)  # fmt: skip
    ds.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds, codestream


def test_htj2k_is_stored_and_returned_unchanged(imaging_client, orthanc, tmp_path):
    ds, codestream = htj2k_instance(tmp_path)
    resp = imaging_client.post(
        "/imaging/upload", files=[("file", ("ht.dcm", to_bytes(ds), "application/dicom"))]
    )
    assert resp.status_code == 201, resp.text
    (res,) = resp.json()["imagingStudies"]
    assert res["numberOfInstances"] == 1
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}")  # fmt: skip
    wado = imaging_client.get(url, headers={"Accept": ANY_SYNTAX})
    assert wado.status_code == 200
    assert "1.2.840.10008.1.2.4.201" in wado.headers["content-type"] or codestream in wado.content
    boundary = wado.headers["content-type"].split("boundary=")[1].strip('"')
    part = wado.content.split(f"--{boundary}".encode())[1].split(b"\r\n\r\n", 1)[1]
    back = pydicom.dcmread(io.BytesIO(part[:-2]), force=True)
    assert back.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    assert codestream in back.PixelData
