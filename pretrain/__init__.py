"""Self-supervised pre-training: the catalog's methods (MoCo-v2, DeepCluster-v2, SwAV) and their HEXA variants.

Rooms: `methods/` (the pseudo-label interface, each method, its losses, HEXA's hard views), `data/` (images
to augmented views), `loop/` (the trainer and what it calls). At the root: `config` (a recipe, resolved once
into a PretrainConfig, and the family -> method class map), `processes` (rank, world size, device), `cli`.
Nothing heavy is imported here.
"""
