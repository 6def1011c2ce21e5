"""Scenario families (split, permuted, rotated) and benchmark suites (``suites/*.toml``).

Installed as ``lifelong.scenarios``; every :class:`lifelong.ScenarioFamily` defined in a
module here is found by its ``name``.
"""
