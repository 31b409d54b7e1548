"""Image transforms: query parameters and presets (`params`; signatures in `..signing`), `Accept`
negotiation (`negotiate`), the pixel arithmetic of the fits (`geometry`), formats, results and
limits (`result`), the libvips engine (`engine`, the only module that imports pyvips) and the
bounded thread pool that runs it (`pool`).

Nothing is imported here, so that reading parameters or signing never loads pyvips.
"""
