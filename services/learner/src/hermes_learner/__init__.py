"""Hermes learner: clarifying-question templates, idea classification, clarity, measured answer rates."""
