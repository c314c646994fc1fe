"""Chest X-ray abnormality detection on the TensorFlow Object Detection API.

One module per pipeline stage; data flows annotations -> split -> records ->
pipeline_config -> train -> export -> detect -> evaluate.
"""

__version__ = "0.1.0"
