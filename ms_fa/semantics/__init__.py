"""The semantics of Ascend's FlashAttentionScore, in plain numpy (no framework import).

Everything that decides what an argument means lives here: validation and normalization
(:mod:`.args`), layouts (:mod:`.layouts`), the sparse-mode band rules and block plan (:mod:`.plan`),
position embeddings (:mod:`.pse`), dropout bits (:mod:`.dropout`) and the float64 reference
(:mod:`.reference`) that is the test oracle. Other parts of ms_fa call in here and never
re-derive a rule.
"""
