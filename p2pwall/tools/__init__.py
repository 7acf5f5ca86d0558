"""Console tools: rule generation, the control client, the server-list tracker."""
