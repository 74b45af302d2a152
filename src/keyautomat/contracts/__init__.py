"""Key contracts: one core with a kind per kind of key (iLOQ, mechanical); docs/contracts.md.

Import nothing here: the rules (``rules.py``) are used by modules the rest of the
contract package itself imports (the device layer checks pincodes with them).
"""
