"""Annotations in, records out: NIH's CSV, labelImg XML and Label Studio exports, checked against their images,
split by patient and written as TFRecords.
"""
