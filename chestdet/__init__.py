"""Chest X-ray abnormality detection on the TensorFlow Object Detection API.

One sub-package per stage, in the order data flows: core -> data -> training -> export -> detection ->
evaluation -> clinical, service; commands/ holds the command-line layer over all of them.
"""

__version__ = "0.1.0"
