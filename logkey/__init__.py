"""logkey: POP-before-SMTP relay authorisation from mail logs."""
__version__ = "0.1.0"
