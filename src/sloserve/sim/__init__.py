"""sloserve.sim"""
