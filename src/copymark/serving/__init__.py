"""copymark.serving"""
