"""fas_dropout_model in GRAPH mode (plain MindSpore; run through ``python -m ms_fa run``)."""

import mindspore as ms
from fas_dropout_model import main

if __name__ == "__main__":
    ms.set_context(mode=ms.GRAPH_MODE)
    main()
