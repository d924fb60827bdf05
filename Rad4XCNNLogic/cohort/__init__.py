"""The cohort: the manifest and its splits, image and mask I/O, the lesion crop, the synthetic cohort and the
BUSI import. Everything downstream reads cases through this package."""
