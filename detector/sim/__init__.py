"""The simulated plant (schedules, faults, sensors, publishing) and the demo built on it.
Imports the core, the worker and the settings; nothing imports it but `iotad`'s
command table, training's factory evaluation, bench and tests.
"""
