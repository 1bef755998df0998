"""The variational autoencoder (Davletshina et al.): its config section, its reconstruction / KLD scorer and its
training stage."""
