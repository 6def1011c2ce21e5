"""The tools a strategy's update is written with: parameters as dicts, inner loops, meta-
gradients and plain SGD arithmetic.
"""
