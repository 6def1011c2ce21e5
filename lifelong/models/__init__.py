"""Models: the default MLP, the conv backbones, the model axis (``--set model=...``) and the
contract a model fulfils.
"""
