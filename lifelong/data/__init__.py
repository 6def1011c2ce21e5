"""Data sources: the MNIST family's files and a user's own data."""
