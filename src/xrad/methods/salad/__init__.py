"""SALAD (Bozorgtabar et al., MICCAI 2020) and its ablations (MemDAE, without L_agg, without L_rec): its config
section, the memory-bank helpers, the Eq. 4 scorer and the progressive training stage."""
