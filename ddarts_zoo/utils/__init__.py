"""Infrastructure shared by the training and search loops: atomic files, distributed context, seeding, AMP."""
