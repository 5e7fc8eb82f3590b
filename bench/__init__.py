"""Benchmarks: rate, accuracy and speed of segcodec on real data (needs --data)."""
