"""Image semantics, pure: no HTTP, no trio, no pyfuse3.

What a sidecar ``NAME.meta`` means, what ``user.image.*`` and ``user.pithos.*``
attributes read and ask for, and which names are sidecars, editor
temporaries or version entries. The filesystem (``imagefs.fs``) calls these
functions and applies what they return through the client; because nothing
here touches the network, every rule is tested with plain pytest tables
(``tests/unit/test_metafile.py``, ``test_xattrs.py``, ``test_sidecar.py``).

- ``metafile``: kamaki metafile JSON <-> ``Registration``; property-key rules.
- ``xattrs``: attribute names -> typed ``Attr``; get/set/remove -> bytes or ``Change``.
- ``sidecar``: sidecar, temporary, version-entry and reserved names; pending sidecars.
"""
