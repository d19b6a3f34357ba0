"""Push providers: one module per provider, one small interface in base.py."""
