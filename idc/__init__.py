"""idc: invasive ductal carcinoma detection on breast-histopathology patches, with saliency maps."""

__version__ = "0.1.0"
