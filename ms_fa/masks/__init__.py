"""ms_fa.masks: user-facing mask objects (:mod:`ms_fa.masks.objects`, exported lazily from ``ms_fa``)."""
