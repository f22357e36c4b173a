"""ms_fa.masks"""
