"""ms_fa.torch"""
