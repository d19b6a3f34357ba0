"""Domain services. They know nothing of HTTP or of a dialect's JSON."""
