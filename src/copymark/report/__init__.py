"""copymark.report"""
