"""Scoring: the one evaluation protocol (``protocol``) and stream scoring with a stepper (``stream``)."""
