"""pytest configuration for every run, also one that collects only notebooks (``pytest notebooks/05_maml.ipynb``)."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    # The stored outputs were computed on the CPU. On a GPU the same seeds train slightly different
    # models (another order of floating-point sums), so the digits of every result move and a verdict
    # near its threshold can change. There, nbval still runs every cell, and still compares the outputs
    # of the derivation checks (cells with a ``checks`` entry) with their digits masked; the cells that
    # report statistics of trained models (nbval-check-output without ``checks``) are compared on the CPU only.
    from metaadv_edu import pick_device

    if pick_device().type == "cpu":
        return
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or not getattr(item, "options", {}).get("check"):
            continue
        if cell.metadata.get("checks"):
            item.parent.sanitize_patterns[r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?"] = "N"  # 0.0e+00 on the CPU, 3e-17 here
        else:
            item.options["check"] = False
