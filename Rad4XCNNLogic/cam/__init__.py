"""Saliency maps: CAM methods computed with pytorch-grad-cam, mapped back to the image geometry, and the
measures that compare them with the lesion and with each other."""
