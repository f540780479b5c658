"""Whole-image steganography: codecs (learned En2D / GglNet and classical LSB), image sets,
hiding quality, steganalysis detectors' use, and the codec / detector training runs."""
