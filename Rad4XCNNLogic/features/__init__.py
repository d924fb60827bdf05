"""Feature extraction: radiomic features (PyRadiomics and its presets), deep features from timm backbones,
fine-tuning, and the image preprocessing that deep features, training and CAMs share."""
