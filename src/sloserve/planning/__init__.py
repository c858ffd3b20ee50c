"""sloserve.planning"""
