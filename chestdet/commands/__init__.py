"""The command-line layer: each module parses its flags, calls the library and logs.

TensorFlow reads its log level once, at import, and some stages import it with their module, before a
command has parsed its arguments: so the level is set here, before any command module loads, and -v on
the command line lifts it.
"""

import sys as _sys

from chestdet.core import compat as _compat

_compat.quiet(verbose=any(arg in ("-v", "--verbose") for arg in _sys.argv[1:]))
