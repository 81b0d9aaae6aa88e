"""Marking the tests that prove a notebook check has teeth.

Every cell of a notebook that prints a ✓ verdict of a derivation check names, in its cell metadata, the
checks it runs: ``"checks": ["maml_hessian_term", ...]`` (in the MyST twin: ``checks: [...]`` in the
cell's front matter). For each name, at least one test feeds that check a *plausible* wrong
implementation — a sign-flipped loss, a dropped Hessian term, a params-ignoring step, a non-maximiser;
never a constant or a random stand-in — and asserts that it answers ✗. Such a test carries::

    @rejects("maml_hessian_term", "first-order meta-gradient (Hessian term dropped)")
    def test_hessian_check_rejects_fomaml(): ...

`tests/test_checks_have_teeth.py` reads the ✓ cells of the stored notebooks and the ``@rejects`` marks
of the tests (statically), and fails for a check without one.
"""

from __future__ import annotations

from collections.abc import Callable


def rejects(check: str, mistake: str) -> Callable:
    """Mark a test that feeds the notebook check ``check`` the wrong implementation ``mistake`` and
    asserts that the check rejects it."""
    if not check or not mistake:
        raise ValueError("rejects needs the check's name and the mistake it is fed")

    def mark(test: Callable) -> Callable:
        test.rejects = (*getattr(test, "rejects", ()), (check, mistake))
        return test

    return mark
