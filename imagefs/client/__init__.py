"""Synchronous HTTP client of the Synnefo APIs (requests); never imports trio.

``http`` owns sessions, retries and the one status -> exception table;
``identity``, ``pithos`` and ``plankton`` own one service each and return the
plain values of ``models``.
"""
