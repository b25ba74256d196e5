"""preforkd-py: a reference port of the prefork protocol (SPEC.md) in Python 3, stdlib only."""
