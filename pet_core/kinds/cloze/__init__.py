"""PET's cloze kind: a masked LM fills the pattern's mask; label words score the labels."""
