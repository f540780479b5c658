"""copymark.metrics"""
