"""Sweeps: one job per batch size (and seed), compared, and the critical batch size fitted.

The maths is :mod:`service.science`; this package reads the sweep's jobs and orchestrates
them, each part by its own module path: ``schemas``, ``repository``, ``points`` (a point as a
job), ``runs`` (a point job as a run; how a batch size's rates rank), ``target_choice`` (the
sweep's target loss), ``analysis`` (a sweep's jobs analysed: points, fit, recommendation),
``noise_read`` (the noise-scale reads), ``orchestration`` (the learning-rate rounds),
``service`` (the lifecycle; import it as ``from service.sweeps import service as
sweeps_service``), ``plots_data``.
"""
