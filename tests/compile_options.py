"""Compiler options of the tests' own compiled checks.

FAST_COMPILE skips LLVM's optimisations (about a quarter of the compile time): for checks
of algebraic properties on a few points, compiled and run once. The flows' code is the
same; only the machine code of the test's program is less optimised.
"""

FAST_COMPILE = {'xla_backend_optimization_level': 0}
