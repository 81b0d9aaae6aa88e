"""Exercise graders of the chapters whose module would otherwise exceed the length guideline."""
