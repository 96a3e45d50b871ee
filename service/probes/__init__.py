"""Probes: the critical batch size measured directly (Merrill et al. 2025), as ordinary jobs.

A probe branches a source job's kept checkpoints at several batch multipliers, each branch a
job with ``init_from``; it reads whether each keeps up with the ×1 branch after the same
samples. Lifecycle in ``service``, SQL in ``repository``, branch jobs in ``branches``, the
reading of their histories in ``analysis``, the learning-rate rounds in ``orchestration``;
the maths is :mod:`service.science.critical`.
"""
