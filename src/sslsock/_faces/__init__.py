"""The synchronous faces: the object face (``objects``: ``Listener``, ``connect``) and the
WLanguage named face (``named``) with its registry of names (``registry``).  The asyncio
face is the public module ``sslsock.aio``.
"""
