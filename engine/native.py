"""The per-decision hot path: engine/_native.c, or its Python twin where it was not built.

pip builds the C extension when the machine has a C compiler and Python's headers (CI
does). Without them pol still works, on engine/_purepy.py: the same answers, slower.
POL_PURE_PYTHON=1 chooses the Python twin even when C is there (tests use it).
"""

from __future__ import annotations

import os

if os.environ.get("POL_PURE_PYTHON") == "1":
    from . import _purepy as _impl
else:
    try:
        from . import _native as _impl
    except ImportError:  # not built: no C compiler where pip ran
        from . import _purepy as _impl

IMPLEMENTATION = "python" if _impl.__name__.endswith("_purepy") else "c"

PolicyDecisionCore = _impl.PolicyDecisionCore
DecisionCore = _impl.DecisionCore
Validator = _impl.Validator
Tree = _impl.Tree
Evaluator = _impl.Evaluator

A_COMPARE, A_TRUTH, A_IN, A_NOT_IN, A_PRESENT, A_CALL = _impl.A_COMPARE, _impl.A_TRUTH, _impl.A_IN, _impl.A_NOT_IN, _impl.A_PRESENT, _impl.A_CALL
C_AND, C_OR, C_NOT, C_ATOM = _impl.C_AND, _impl.C_OR, _impl.C_NOT, _impl.C_ATOM
N_LEAF, N_DISPATCH, N_SEQ = _impl.N_LEAF, _impl.N_DISPATCH, _impl.N_SEQ
K_STRING, K_ENUM, K_INT, K_FLOAT, K_BOOL = _impl.K_STRING, _impl.K_ENUM, _impl.K_INT, _impl.K_FLOAT, _impl.K_BOOL
K_STRINGS_LIST, K_STRINGS_SET, K_OTHER = _impl.K_STRINGS_LIST, _impl.K_STRINGS_SET, _impl.K_OTHER
