"""copymark.study"""
