"""copymark.watermark"""
