"""The detection core: pure, no I/O. Readings in, scores and events out.

Windows, forecaster, scoring, decision, events, device models and their judge,
relations, seasonality, features, rules, the model artifact and `DetectionCore`.
Imports nothing from `detector.worker.loop`, `detector.sim` nor `detector.config`
(tests/detector/test_import_boundaries.py).
"""
