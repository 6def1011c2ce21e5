"""Built-in strategies, one file each, written only against lifelong's public API.

Installed as ``lifelong.strategies``; every concrete :class:`lifelong.Strategy` defined in
a module here is found by its ``name``. A user's own file plugs in the same way:
``--strategy path/to/file.py:ClassName``.
"""
