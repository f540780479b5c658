"""copymark.stats"""
