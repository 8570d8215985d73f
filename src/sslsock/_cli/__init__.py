"""The ``sslsock`` command: what the commands share (``common``), the certificate
commands (``cert``), the network commands and the parser (``main``).
"""
