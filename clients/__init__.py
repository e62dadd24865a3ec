"""Client side of every algorithm: a BaseClient (NumPyClient) subclass per algorithm.

The package path extends over ``sys.path`` like ``strategies`` (see CONTRIBUTING.md).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
