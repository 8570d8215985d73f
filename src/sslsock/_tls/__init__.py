"""TLS configuration: the SSL-options bitmask as a recipe (``options``) and the TLS
contexts built from it, shared and cached (``contexts``).
"""
