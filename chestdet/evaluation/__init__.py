"""Detections against ground truth: COCO AP, FROC, the ChestX-ray8 paper's measures, bootstrap intervals,
reports, cross-validation.
"""
