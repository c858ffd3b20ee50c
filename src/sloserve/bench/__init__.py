"""sloserve.bench"""
