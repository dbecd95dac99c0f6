"""An independent reader (pydicom, plus highdicom when installed) agrees with vcfd's JSON.

VCFD_SR_DIR holds one folder per case, each with sr.dcm and report.json, written by
`cargo test --release -p vcfd --test sr` with VCFD_SR_EXPORT_DIR set (scripts/python-tests.sh).
The vertebra code table below is kept here on purpose, separate from the Rust one, so a wrong
code on either side fails the test.
"""

import json
import os
from pathlib import Path

import pydicom
import pytest

# SNOMED CT codes of DICOM's anatomic master list (as in the TotalSegmentator DICOM-SEG labels).
VERTEBRA_SCT = {
    "64864005": "T1", "53733008": "T2", "1626008": "T3", "73071006": "T4",
    "56401006": "T5", "45296009": "T6", "62487009": "T7", "11068009": "T8",
    "82687006": "T9", "7610001": "T10", "12989004": "T11", "23215003": "T12",
    "66794005": "L1", "14293000": "L2", "36470004": "L3", "11994002": "L4",
    "49668003": "L5",
}
HEIGHTS = {"VCFD0001": "anterior", "VCFD0002": "middle", "VCFD0003": "posterior"}
MORPHOLOGY = {"VCFD0200": "normal", "VCFD0201": "wedge", "VCFD0202": "biconcave",
              "VCFD0203": "crush"}


def cases():
    root = os.environ.get("VCFD_SR_DIR")
    if not root:
        return []
    return sorted(p for p in Path(root).iterdir() if (p / "sr.dcm").is_file())


def concept(item):
    return (item.ConceptNameCodeSequence[0].CodeValue,
            item.ConceptNameCodeSequence[0].CodingSchemeDesignator)


def child(ds, code):
    return next(i for i in ds.ContentSequence if concept(i)[0] == code)


def read_groups(ds):
    out = []
    for g in child(ds, "126010").ContentSequence:
        assert concept(g) == ("125007", "DCM")
        site, nums, codes = None, {}, {}
        for it in g.ContentSequence:
            code, _ = concept(it)
            if it.ValueType == "CODE":
                value = it.ConceptCodeSequence[0]
                if code == "363698007":
                    assert value.CodingSchemeDesignator == "SCT"
                    site = value.CodeValue
                else:
                    codes[code] = value.CodeValue
            elif it.ValueType == "NUM":
                mv = it.MeasuredValueSequence[0]
                nums[code] = (float(mv.NumericValue),
                              mv.MeasurementUnitsCodeSequence[0].CodeValue)
        out.append((site, nums, codes))
    return out


def test_cases_were_exported():
    if os.environ.get("VCFD_SR_DIR") is None:
        pytest.skip("VCFD_SR_DIR not set: run scripts/python-tests.sh")
    assert len(cases()) >= 4, "expected the fracture phantom and the real CT, from the tests and from the CLI"


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.name)
def test_sr_matches_json_report(case):
    ds = pydicom.dcmread(case / "sr.dcm")
    report = json.loads((case / "report.json").read_text())
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.VerificationFlag == "UNVERIFIED"
    assert ds.StudyInstanceUID == report["study_instance_uid"]
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == report["series_instance_uid"]
    assert "99VCFD" in [s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence]

    groups = read_groups(ds)
    vertebrae = report["vertebrae"]
    assert len(groups) == len(vertebrae)
    for (site, nums, codes), v in zip(groups, vertebrae):
        assert VERTEBRA_SCT.get(site) == v["level"]
        for code, name in HEIGHTS.items():
            value, unit = nums[code]
            assert unit == "mm"
            assert value == pytest.approx(v["heights_mm"][name], abs=1e-5)
        value, unit = nums["VCFD0004"]
        assert unit == "%"
        assert value == pytest.approx(v["deformity"] * 100.0, abs=1e-5)
        if v["trabecular_hu"] is None:
            assert "112031" not in nums
        else:
            assert nums["112031"] == (pytest.approx(v["trabecular_hu"], abs=1e-5), "[hnsf'U]")
        assert codes["VCFD0005"] == f"VCFD010{v['genant_grade']}"
        assert MORPHOLOGY[codes["VCFD0006"]] == v["morphology"]

    conclusion = child(child(ds, "C0034375"), "121077").TextValue
    fractures = [v for v in vertebrae if v["genant_grade"] >= 2]
    if fractures:
        worst = max(fractures, key=lambda v: v["deformity"])
        # Without a level anchor the SR names no level rather than a guessed one.
        where = worst["level"] or "an unlabelled"
        assert conclusion.startswith(
            f"Compression deformity of {where} vertebral body, "
            f"{worst['deformity'] * 100:.0f} % (Genant {worst['genant_grade']}, "
            f"{worst['morphology']})")
    else:
        assert conclusion.startswith("Target pathology not found")


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.name)
def test_highdicom_reads_the_sr(case):
    hd = pytest.importorskip("highdicom")
    sr = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(case / "sr.dcm"))
    observers = sr.content.get_observer_contexts()
    assert observers, "device observer context missing"
