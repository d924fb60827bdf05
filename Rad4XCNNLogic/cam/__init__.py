"""Saliency maps: CAM methods computed with pytorch-grad-cam, mapped back to the image geometry, the measures
that compare them with the lesion and with each other, their checks (sanity flags, faithfulness, the
randomisation test, a verdict per method), and voxel-based radiomic feature maps to read beside them."""
