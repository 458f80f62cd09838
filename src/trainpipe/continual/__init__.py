"""Scheduled continual retraining: partitions, watermark, lease, replay, and the run driver.

See docs/continual.md.
"""
