"""ms_fa.masks: user-facing mask objects, compiled to exact Ascend arguments (exported lazily from ``ms_fa``).

Modules, one job each (after JAX splash attention's split of masks and their compiler):

- :mod:`.objects`: the mask dataclasses, ``&``, ``materialize()`` and pictures;
- :mod:`.targets`: row intervals and the typed per-batch targets a mask denotes;
- :mod:`.compile`: ``to_ascend`` -- a mask to the exact ``speed_fusion_attention`` arguments;
- :mod:`.render`: text and PNG pictures of a bool mask;
- :mod:`.expr`: the safe mask-expression language of ``python -m ms_fa explain --mask``.
"""
