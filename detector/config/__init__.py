"""The settings: every settings model with its bounds, the config file and the
environment. A leaf: imports no module with behaviour from the rest of `detector`,
only a few value modules (tests/detector/test_import_boundaries.py).
"""
