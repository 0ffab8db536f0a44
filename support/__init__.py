"""Real services as processes, for the tests and the benchmarks alike.

Not part of the installed package (pyproject.toml installs `detector` and `training` only):
both `tests/` and `bench/` import it from the repository root. Nothing here imports pytest.
"""
