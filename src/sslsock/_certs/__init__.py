"""The certificate store (``store``: find, load, import) and the certificates it makes
(``generate``).
"""
