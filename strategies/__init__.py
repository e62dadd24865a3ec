"""Server side of every algorithm: a FederatedStrategy subclass and the ``ALGORITHM`` declaration.

The package path extends over ``sys.path`` so that a folder of your own with a ``strategies/``
directory adds algorithms (see fedapp/registry.py and CONTRIBUTING.md).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
