"""Adapters that let harnesses written against other runners' contracts
use atp without a rewrite.  ``atp.compat.open_atp`` is open-atp's
ComputeBackend contract."""
