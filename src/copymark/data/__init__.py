"""copymark.data"""
