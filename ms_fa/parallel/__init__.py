"""ms_fa.parallel"""
