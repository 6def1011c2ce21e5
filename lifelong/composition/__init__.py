"""Composition: spec strings such as ``la-maml+ewc`` into strategies, the registry of names and
run plans.
"""
