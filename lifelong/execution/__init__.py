"""Execution: the training loop (one seed or a stack), protocols, sweeps, suites, checkpoints
and the process's resources.
"""
