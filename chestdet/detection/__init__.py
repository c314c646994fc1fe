"""Exported models over images: decoded, inferred in batches, drawn, written as tables and review files,
explained with Grad-CAM.
"""
