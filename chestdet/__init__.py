"""Chest X-ray abnormality detection on the TensorFlow Object Detection API.

One module per pipeline stage; data flows annotations -> split -> records ->
pipeline_config -> train -> export -> detect -> evaluate.
"""

import sys as _sys

from chestdet import compat as _compat

__version__ = "0.1.0"

# TensorFlow reads its log level once, at import, and some stages import it with their module, before
# a command has parsed its arguments: so the level is set here, and -v on the command line lifts it.
_compat.quiet(verbose=any(arg in ("-v", "--verbose") for arg in _sys.argv[1:]))
