"""Findings into the hospital systems: DICOM SR and presentation states, a DICOM node, HL7."""
