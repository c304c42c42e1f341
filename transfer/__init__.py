"""Transfer evaluation of pre-trained trunks: one module per protocol, plus shared readers and features."""
