"""Metrics with the reference implementations' numbers: SWD, MS-SSIM, FID, KID, IS, precision/recall."""
