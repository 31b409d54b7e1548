"""imgproxy: serve images from Azure Blob Storage through a coalescing, streaming cache."""

__version__ = "0.1.0"
