"""The executables: click commands that parse options, call the engine and
map its results to exit statuses. Only this package knows click."""
