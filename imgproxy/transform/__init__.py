"""Image transforms: query parameters (`params`), `Accept` negotiation (`negotiate`), the libvips
engine and its bounded pool (`engine`, the only module that imports pyvips).

Nothing is imported here, so that reading parameters or signing never loads pyvips.
"""
