"""Deployment: worker processes (``workers``), session ticket keys (``tickets``) and
certificate renewal (``renewal``).
"""
