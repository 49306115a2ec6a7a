"""Training and evaluation of classifiers (the zoo's own models, defenses build on this)."""
