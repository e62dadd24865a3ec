"""Client side of every algorithm: a BaseClient (NumPyClient) subclass per algorithm."""
