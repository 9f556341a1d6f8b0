"""What a person declares: layers, losses, models, and model files.

Public through `nncompile.nn`.  Imports the registry and the formula parser
(`symbolic`), and nothing of the later stages: a model is plain data.
"""
