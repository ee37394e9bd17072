"""Cross-checks of GVA theory against empirical runs, the ``gva`` command and the report.

Imports ``gvatheory`` and ``gvaempirics`` lazily, so ``gva theory ...`` runs without torch.
"""
