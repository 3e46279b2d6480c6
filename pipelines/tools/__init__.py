"""Tools: the registry, the execute_tool job, the sandbox that runs code and the built-in file tools' workspaces."""
