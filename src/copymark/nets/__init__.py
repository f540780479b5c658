"""copymark.nets"""
