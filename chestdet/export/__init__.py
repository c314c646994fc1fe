"""A trained checkpoint as a SavedModel and a TFLite model, the backends that run them, and what an export is to
the stages that receive it.
"""
