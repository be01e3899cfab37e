"""Admission: who may publish and read (gate.py)."""
