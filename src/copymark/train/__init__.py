"""copymark.train"""
