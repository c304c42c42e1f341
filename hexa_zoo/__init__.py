"""hexa-zoo: timm models pre-trained with hard examples (HEXA), and the tools around them.

`import hexa_zoo` registers the models with timm and nothing heavier: no training or
transfer code is imported and the network is never touched.

    import hexa_zoo, timm
    model = timm.create_model("hexa_moco_r18", pretrained=True)   # weights from the local zoo or the Hub
    trunk, info = hexa_zoo.load_trunk("moco_v2_800ep_pretrain.pth.tar")  # any supported checkpoint
"""

from .version import __version__

from . import models  # noqa: E402,F401  (registers the models with timm)
from .weights import load_trunk, zoo_home  # noqa: E402

__all__ = ["__version__", "load_trunk", "zoo_home", "models"]
