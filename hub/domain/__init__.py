"""Domain types and the error tree. Standard library only."""
