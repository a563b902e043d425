"""Static word vectors and their mapping between spaces (docs/embeddings.md):
fastText skip-gram vectors per vocabulary entry (`static`), and unsupervised MUSE-style mapping with CSLS
and Procrustes (`mapping`). TreLM's Stages B and C are built from them."""
