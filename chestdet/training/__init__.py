"""Training through the OD API's model_lib_v2: pipeline configs, start checkpoints, the run folder, the
supervised training and evaluation processes.
"""
