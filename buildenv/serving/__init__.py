"""Files copied into serving images by `buildenv image` (see buildenv/image.py)."""
