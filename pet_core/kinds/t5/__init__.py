"""T5 text-to-text: the pattern's mask becomes T5's sentinel; label words are scored as the span it fills."""
