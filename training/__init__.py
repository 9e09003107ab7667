"""Training-time libraries: read a snapshot's outputs in a trainer (numpy + pyarrow; no Beam, no torch)."""
