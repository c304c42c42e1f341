"""Transfer evaluation of pre-trained trunks, in rooms by kind: `protocols/` (one module per protocol),
`readers/` (every dataset layout), `detection/` (the detector's pieces), and the shared pieces beside them."""
