"""The training loop (`trainer`) and what it calls each step or epoch: the optimiser and its schedule
(`optim`), checkpoints (`checkpoint`), the log (`runlog`), an epoch's tally (`epoch_tally`), the stop on a
diverged loss (`divergence`), the online kNN monitor (`monitor`) and publishing to the zoo (`publishing`).
Nothing is imported here.
"""
