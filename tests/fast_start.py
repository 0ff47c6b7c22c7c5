"""pytest plugin loaded before any other (``-p tests.fast_start`` in pyproject's addopts).

jsonschema, which nbformat imports when pytest loads nbval's plugin, builds an Earley parser of
RFC 3987 at import time when the optional package rfc3987-syntax is installed (JupyterLab's
dependencies bring it): 6 s at the start of every pytest process on a 2-core machine, unit
tests included. Nothing in the tests validates IRIs, so test processes act as if that package
were absent; jsonschema then drops only its "iri" format check.
"""

import sys

sys.modules.setdefault("rfc3987_syntax", None)
