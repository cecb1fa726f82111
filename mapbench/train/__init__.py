"""Training the ``edm_unet`` priors: the EDM denoiser (``edm_loss``), its distilled consistency model
(``consistency_distill``), the shared loop with EMA (``loop``), the networks and their presets
(``networks``) and the samplers that check them (``sample``)."""
