"""Self-supervised pre-training: the catalog's methods (MoCo-v2, DeepCluster-v2, SwAV) and their HEXA variants.

Modules: `method` (the pseudo-label interface every method implements, and what they share),
`hard_views` (HEXA's adversarial and CutMix views and `hexa_step`, the one training step of them all),
`moco`, `deepcluster` and `swav` (each method's own part), `losses` (pure loss functions), `kmeans`
(distributed spherical k-means); `trainer` (the loop) with `sampling`, `optim`, `checkpoint`, `runlog` and
`processes`; `config` and `augment` (recipes); `cli`. Nothing heavy is imported here.
"""
