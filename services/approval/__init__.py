"""Approval: puts escalations in front of humans and records their signed decisions."""
