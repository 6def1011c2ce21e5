"""Evaluation: metrics (pure functions of the accuracy matrix), run results, the results
directory, reports and plots.
"""
