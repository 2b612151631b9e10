"""``python -m workstate check``: the trace checker's command line.

The command itself is :func:`workstate._trace.main`, which needs no Hypothesis; this module
re-exports it under the name the dispatcher may use.  Note that importing it imports
:mod:`workstate.testing` (and so Hypothesis) first: a dispatcher that must work without the
``testing`` extra should call :func:`workstate._trace.main` directly.
"""

from __future__ import annotations

from workstate._trace import main

__all__ = ["main"]
