"""Server side of every algorithm: a FederatedStrategy subclass and the ``ALGORITHM`` declaration (see fedapp/registry.py)."""
