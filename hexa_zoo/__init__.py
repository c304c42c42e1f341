"""hexa-zoo: timm models pre-trained with hard examples (HEXA), and the tools around them.

`import hexa_zoo` registers the models with timm and nothing heavier: no training or
transfer code is imported and the network is never touched.
"""

__version__ = "0.1.0"
