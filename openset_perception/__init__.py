"""Dense open-set semantic segmentation (DenseHybrid) for vehicle cameras."""

__version__ = "0.1.0"
