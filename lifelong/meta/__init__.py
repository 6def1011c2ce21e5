"""Meta-training of learned inits (MAML, Reptile, OML, ...): the engine side, task pools and
caches.
"""
