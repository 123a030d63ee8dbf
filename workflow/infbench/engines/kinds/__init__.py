"""One module per engine kind, each registering its Engine subclass (engines/base.py): every module
here is imported when the registry is first asked, so adding a kind is adding a module."""
