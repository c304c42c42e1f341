"""The top floor: jobs that run the others in order (`hexa demo`, `hexa study`).

It may import every floor below it: hexa_zoo, cluster, pretrain, transfer and leaderboards. Nothing imports it
except the `hexa` command line, which names it by module (hexa_zoo.cli).
"""
