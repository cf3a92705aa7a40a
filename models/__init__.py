"""Neural network modules: the frozen timm encoder, necks, actors, critics and students.

Modules only (torch and timm): no environments, optimizers or files. Import submodules directly;
this package imports nothing so that its plain-data catalogue works without torch.
"""
