"""sloserve.rl"""
