"""The core binding and the engine driver: the compiled module's one importer
(``binding``), the exception tree (``errors``), a connection and its one read and write path
(``connection``), and the channel engine's Python side (``engine``).
"""
