"""The HTTP edge: parse, validate, render each dialect's envelope and errors."""
