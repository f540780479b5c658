"""copymark.extraction"""
