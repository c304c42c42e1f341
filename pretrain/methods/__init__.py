"""The methods: the pseudo-label interface (`method`), MoCo-v2 (`moco`), DeepCluster-v2 (`deepcluster`) and
SwAV (`swav`) with their losses (`losses`, `kmeans`), HEXA's hard views (`hard_views`, `aux_bn`) and a step's
ideal cost (`cost`). Nothing is imported here.
"""
