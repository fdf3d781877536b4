"""Architectures of tiny models shared by several test files (random weights; fast, same code paths)."""

# A small DensePose chart model: ResNet-18 trunk, narrow layers.
TINY_DENSEPOSE = {
    "depth": 18,
    "stem_out_channels": 8,
    "res2_out_channels": 8,
    "fpn_channels": 16,
    "decoder_conv_dims": 16,
    "decoder_num_classes": 16,
    "head_num_convs": 2,
    "head_conv_dim": 16,
    "pooler_resolution": 7,
}
