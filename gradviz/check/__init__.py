"""Property tests for custom ``torch.autograd.Function`` subclasses ("Function Lab").

``check_function(MyReLU, shapes=[(5,)])`` runs Hypothesis over inputs rich in zeros and
ties and checks, per example: the Jacobian against finite differences (kink-aware: at a
kink or tie the gradient only has to lie between the one-sided slopes), grad_output
linearity and immutability, input immutability, determinism, finiteness, aliasing, the
raw backward's shapes and dtypes, and optionally a reference, jvp, vmap and double
backward. Each failing property comes back with its own shrunk counterexample.
"""

from __future__ import annotations

from gradviz.check._api import ALL_CHECKS, DEFAULT_CHECKS, assert_function_ok, check_function
from gradviz.check._report import CHECKS, Entry, Failure, FunctionReport, Kink

__all__ = [
    "ALL_CHECKS",
    "CHECKS",
    "DEFAULT_CHECKS",
    "Entry",
    "Failure",
    "FunctionReport",
    "Kink",
    "assert_function_ok",
    "check_function",
]
