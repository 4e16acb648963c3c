"""Rules over the code base as a whole: what each side may import, and how the tests are laid out."""
