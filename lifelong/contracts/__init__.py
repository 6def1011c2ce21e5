"""The contracts: a strategy, its parts (learner, memory, regularizer, init), a scenario family
and the stream it builds, typed hyperparameters, and the conformance check.
"""
